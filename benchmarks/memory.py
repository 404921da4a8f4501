"""Peak memory of one training run per setting, each in a fresh process.

A process's peak resident memory only grows, so measuring several settings in one process
says little about the later ones; this script runs every setting in a child process and
reads its peak (``ru_maxrss`` on CPU, ``torch.cuda.max_memory_allocated`` on CUDA).

    python benchmarks/memory.py                                  # ResNet-20, M = 4, member_chunk null / 2 / 1 / auto, fp32 / bf16
    python benchmarks/memory.py --device cuda --members 8
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time


def child(args: argparse.Namespace) -> None:
    import torch

    import ensemblekit as ek
    from ensemblekit.ensemble import Ensemble
    from ensemblekit.models import model_factory
    from ensemblekit.training import Trainer

    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.samples, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (args.samples,), generator=g)
    data = ek.from_arrays(x.numpy(), y.numpy(), x[:10].numpy(), y[:10].numpy(), val_fraction=0.0, name="cifar-shaped")
    factory = model_factory({"name": "resnet", "kwargs": {"depth": args.depth}}, input_shape=(3, 32, 32), num_classes=10)
    chunk = None if args.chunk == "none" else (args.chunk if args.chunk == "auto" else int(args.chunk))
    cfg = {"epochs": 1, "batch_size": args.batch_size, "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
           "schedule": "constant", "device": args.device, "progress": False, "member_chunk": chunk, "precision": args.precision}
    trainer = Trainer(Ensemble.from_factory(factory, seeds=list(range(args.members))), data, cfg, seed=0)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    trainer.fit()
    seconds = time.perf_counter() - t
    peak = (torch.cuda.max_memory_allocated() if args.device.startswith("cuda")
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    print(json.dumps({"peak_mib": peak / 2**20, "seconds": seconds, "member_chunk": trainer.member_chunk}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--members", type=int, default=4)
    p.add_argument("--depth", type=int, default=20)
    p.add_argument("--samples", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--chunks", nargs="+", default=["none", "2", "1", "auto"])
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--chunk", default="none", help=argparse.SUPPRESS)
    p.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    print(f"ResNet-{args.depth}, M = {args.members}, batch {args.batch_size}, {args.samples} CIFAR-shaped examples, one epoch, "
          f"device {args.device}, {args.threads} threads; one fresh process per setting")
    base = [sys.executable, os.path.abspath(__file__), "--child", "--device", args.device, "--members", str(args.members),
            "--depth", str(args.depth), "--samples", str(args.samples), "--batch-size", str(args.batch_size),
            "--threads", str(args.threads)]
    for precision in args.precisions:
        for chunk in args.chunks:
            out = subprocess.run([*base, "--chunk", chunk, "--precision", precision], capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"  {precision}  member_chunk {chunk:>4} (ran with {r['member_chunk']}): peak {r['peak_mib']:7.0f} MiB  "
                  f"{r['seconds']:6.2f} s", flush=True)


if __name__ == "__main__":
    main()
