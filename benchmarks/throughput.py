"""Training throughput: ensemblekit's vectorised engine vs a per-model loop vs torchensemble.

Trains an M-member ensemble for a fixed number of epochs with each implementation, in one
process, interleaved, and prints the times, their ratios and, on CUDA, the peak memory of
each (``torch.cuda.max_memory_allocated``; for CPU memory see ``benchmarks/memory.py``).
Only training is timed (no evaluation, no checkpoints).

    python benchmarks/throughput.py                 # cnn1d on MNIST-1D, CPU, 10 epochs, M = 1 5 10
    python benchmarks/throughput.py --device cuda   # on a GPU
    python benchmarks/throughput.py --repeats 3     # best of 3 per cell
    python benchmarks/throughput.py --model resnet --depth 20 --members 1 4 8 --epochs 1 --samples 1024
        # PreResNet-20 on CIFAR-shaped synthetic data (3x32x32; timing only)
    python benchmarks/throughput.py --model wrn --depth 16 --width 4 --precision bf16 ...

torchensemble is optional: ``pip install --no-deps torchensemble`` (it would otherwise
pull torchvision).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import time
import warnings

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import ensemblekit as ek
from ensemblekit.ensemble import Ensemble
from ensemblekit.models import model_factory
from ensemblekit.training import Trainer


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@contextlib.contextmanager
def _kernels(kind: str):
    """Build ensembles with the stacked kernels (the default) or force the generic vmap path."""
    previous = os.environ.get("ENSEMBLEKIT_STACKED")
    os.environ["ENSEMBLEKIT_STACKED"] = {"vmap": "0", "plan": "plan", "loop": "loop"}.get(kind, "1")
    try:
        yield
    finally:
        if previous is None:
            del os.environ["ENSEMBLEKIT_STACKED"]
        else:
            os.environ["ENSEMBLEKIT_STACKED"] = previous


class PeakMemory:
    """Peak CUDA memory of the block, in bytes above its start (``None`` on CPU: a process's
    resident peak only grows, so in one process it says nothing about the later runs;
    ``benchmarks/memory.py`` measures CPU memory one fresh process per setting)."""

    def __init__(self, device: str) -> None:
        self.device, self.peak = device, None

    def __enter__(self) -> "PeakMemory":
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self._base


def _timed(device: str, fn) -> tuple[float, int | None]:
    with PeakMemory(device) as mem:
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        elapsed = time.perf_counter() - t
    return elapsed, mem.peak


def time_ensemblekit(data: ek.Data, factory, members: int, args, kernels: str = "stacked") -> tuple[float, int]:
    cfg = {"epochs": args.epochs, "batch_size": args.batch_size, "optimizer": {"name": "adam", "lr": 0.01},
           "schedule": "constant", "data_order": args.data_order, "device": args.device, "progress": False,
           "precision": args.precision, "member_chunk": args.member_chunk, "compile": args.compile}
    with _kernels(kernels):
        ens = Ensemble.from_factory(factory, seeds=list(range(members)))
        trainer = Trainer(ens, data, cfg, seed=0)
    return _timed(args.device, trainer.fit)


def time_loop(data: ek.Data, factory, members: int, args) -> tuple[float, int]:
    """M independent modules trained one after another, batches from a DataLoader (the usual script)."""
    torch.manual_seed(0)
    x, y = data.train.x.to(args.device), data.train.y.to(args.device)
    loader = DataLoader(TensorDataset(x, y), batch_size=args.batch_size, shuffle=True)
    models = [factory().to(args.device) for _ in range(members)]
    opts = [torch.optim.Adam(m.parameters(), lr=0.01) for m in models]
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.precision)
    device_type = "cuda" if args.device.startswith("cuda") else "cpu"
    scaler = torch.amp.GradScaler(device_type) if args.precision == "fp16" else None

    def run() -> None:
        for model, opt in zip(models, opts):
            model.train()
            for _ in range(args.epochs):
                for xb, yb in loader:
                    with torch.autocast(device_type, dtype=dtype, enabled=dtype is not None):
                        loss = F.cross_entropy(model(xb).float(), yb)
                    opt.zero_grad(set_to_none=True)
                    if scaler is None:
                        loss.backward()
                        opt.step()
                    else:
                        scaler.scale(loss).backward()
                        scaler.step(opt)
                        scaler.update()

    return _timed(args.device, run)


def time_torchensemble(data: ek.Data, factory, members: int, args) -> tuple[float, int] | None:
    if args.precision != "fp32":
        return None  # torchensemble trains in fp32 only
    try:
        from torchensemble import VotingClassifier
    except ImportError:
        return None
    logging.disable(logging.CRITICAL)
    x, y = data.train.x.to(args.device), data.train.y.to(args.device)
    loader = DataLoader(TensorDataset(x, y), batch_size=args.batch_size, shuffle=True)

    class Net(torch.nn.Module):  # torchensemble instantiates the class itself
        def __init__(self) -> None:
            super().__init__()
            self.net = factory()

        def forward(self, inp):
            return self.net(inp)

    torch.manual_seed(0)
    ens = VotingClassifier(estimator=Net, n_estimators=members, cuda=args.device.startswith("cuda"))
    ens.set_optimizer("Adam", lr=0.01)

    def run() -> None:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # it prints a line per epoch
            warnings.simplefilter("ignore")
            ens.fit(loader, epochs=args.epochs, log_interval=10**9, save_model=False)

    return _timed(args.device, run)


def build(args) -> tuple[ek.Data, object, str]:
    """The data, the model factory and a description of the workload."""
    if args.model == "cnn1d":
        data = ek.load_dataset("mnist1d", val_fraction=0.0, **({"num_samples": args.samples} if args.samples else {}))
        kw = {"channels": args.channels, "batchnorm": not args.no_batchnorm}
        desc = f"MNIST-1D {len(data.train)} train examples, cnn1d(channels={args.channels}, batchnorm={not args.no_batchnorm})"
    else:
        n = args.samples or 1024
        g = torch.Generator().manual_seed(0)
        x = torch.randn(n, 3, 32, 32, generator=g)
        y = torch.randint(0, 10, (n,), generator=g)
        data = ek.from_arrays(x.numpy(), y.numpy(), x[:10].numpy(), y[:10].numpy(), val_fraction=0.0, name="cifar-shaped")
        kw = {"depth": args.depth, "width": args.width} if args.model == "resnet" else {"depth": args.depth, "widen_factor": args.width}
        desc = f"CIFAR-shaped synthetic data (3x32x32), {n} train examples, {args.model}({kw})"
    factory = model_factory({"name": args.model, "kwargs": kw}, input_shape=data.input_shape, num_classes=data.num_classes)
    return data, factory, desc


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--members", type=int, nargs="+", default=[1, 5, 10])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=3, help="best of N interleaved runs per cell")
    p.add_argument("--channels", type=int, default=32)
    p.add_argument("--no-batchnorm", action="store_true")
    p.add_argument("--data-order", default="shared", choices=["shared", "per_member", "bootstrap"])
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--model", default="cnn1d", choices=["cnn1d", "resnet", "wrn"])
    p.add_argument("--depth", type=int, default=None, help="resnet/wrn depth (default 20 / 16)")
    p.add_argument("--width", type=int, default=None, help="resnet width / wrn widen factor (default 16 / 4)")
    p.add_argument("--samples", type=int, default=None, help="training examples (resnet/wrn: synthetic, default 1024; cnn1d: MNIST-1D generated)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--member-chunk", default=None, help="train.member_chunk for ensemblekit (an int or auto)")
    p.add_argument("--compile", action="store_true", help="train.compile for ensemblekit")
    p.add_argument("--no-vmap", action="store_true", help="skip the vmap path")
    p.add_argument("--no-torchensemble", action="store_true")
    p.add_argument("--plan", action="store_true", help="also time the grouped stacked plan (ENSEMBLEKIT_STACKED=plan; "
                   "on CPU the default for 2-D convolutional networks is the member loop)")
    args = p.parse_args()
    if args.width is None:
        args.width = 16 if args.model == "resnet" else 4
    if args.depth is None:
        args.depth = 20 if args.model == "resnet" else 16
    if args.member_chunk not in (None, "auto"):
        args.member_chunk = int(args.member_chunk)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cpu":
        from ensemblekit._runtime import tune_allocator

        tune_allocator()  # what the engine does on CPU; applied first so every implementation gets it
    data, factory, desc = build(args)
    print(f"{desc}, {args.epochs} epochs, batch {args.batch_size}, device {_device_name(args.device)}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, data order {args.data_order}, precision {args.precision}; best of {args.repeats}")
    time_ensemblekit(data, factory, 2, argparse.Namespace(**{**vars(args), "epochs": 1}))  # warm-up
    rows = []
    for m in args.members:
        times: dict[str, list[tuple[float, int]]] = {"ek": [], "vmap": [], "mloop": [], "loop": [], "te": []}
        for _ in range(args.repeats):  # interleaved, so drifting machine noise hits every implementation alike
            times["ek"].append(time_ensemblekit(data, factory, m, args))
            if m > 1 and not args.no_vmap:  # one member never goes through vmap
                times["vmap"].append(time_ensemblekit(data, factory, m, args, kernels="vmap"))
            if m > 1 and args.plan:
                times["mloop"].append(time_ensemblekit(data, factory, m, args, kernels="plan"))
            times["loop"].append(time_loop(data, factory, m, args))
            te = time_torchensemble(data, factory, m, args) if not args.no_torchensemble else None
            if te is not None:
                times["te"].append(te)
        best = {k: (min(t for t, _ in v) if v else None) for k, v in times.items()}
        mem = {k: (max(b for _, b in v) / 2**20 if v and v[0][1] is not None else None) for k, v in times.items()}
        rows.append((m, best["ek"], best["loop"], best["te"]))
        print(f"M={m:3d}  ensemblekit {best['ek']:7.2f}s  (vmap path {_fmt(best['vmap'])}, grouped plan {_fmt(best['mloop'])})  loop {best['loop']:7.2f}s  "
              f"torchensemble {_fmt(best['te'])}   speed-up: vs loop {best['loop'] / best['ek']:5.2f}x  "
              f"vs torchensemble {_ratio(best['te'], best['ek'])}  stacked vs vmap {_ratio(best['vmap'], best['ek'])}   "
              f"peak memory MiB: ensemblekit {_mib(mem['ek'])} vmap {_mib(mem['vmap'])} loop {_mib(mem['loop'])} "
              f"torchensemble {_mib(mem['te'])}", flush=True)
    one = {r[0]: r for r in rows}
    if 1 in one:
        base_ek, base_loop = one[1][1], one[1][2]
        for m, ek_t, _, _ in rows:
            if m > 1:
                print(f"cost of {m} members / one model: {ek_t / base_ek:5.2f}x (ensemblekit M=1)   "
                      f"{ek_t / base_loop:5.2f}x (plain loop, one model)")


def _device_name(device: str) -> str:
    if device.startswith("cuda"):
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return f"cpu ({os.cpu_count()} cores visible)"


def _mib(v: float | None) -> str:
    return f"{v:.0f}" if v is not None else "n/a"


def _fmt(t: float | None) -> str:
    return f"{t:6.2f}s" if t is not None else "   n/a "


def _ratio(slow: float | None, fast: float) -> str:
    return f"{slow / fast:5.2f}x" if slow is not None else "  n/a"


if __name__ == "__main__":
    main()
