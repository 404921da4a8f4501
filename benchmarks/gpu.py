"""The GPU figures in one run (about 8 minutes on one data-centre GPU).

1. cnn1d on MNIST-1D, M = 1, 5, 10: ensemblekit's stacked engine vs a loop of models vs
   torchensemble (when installed).
2. PreResNet-20 and WRN-16-4 on CIFAR-shaped synthetic data (3x32x32), M = 1, 4, 8, in
   fp32 and bf16: seconds per epoch and peak memory.
3. One short real comparison: Ind vs FGE (and one model) on MNIST-1D with 100,000
   generated examples and a wider cnn1d, through ``ensemblekit compare``.

    python benchmarks/gpu.py --device cuda --out gpu.json
    python benchmarks/gpu.py --device cpu --quick      # the same code on tiny sizes (CI)

Every figure is printed and written to ``--out`` as JSON (with the device's name).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import throughput  # noqa: E402  (the timing functions of benchmarks/throughput.py)

import ensemblekit as ek  # noqa: E402


def _ns(**kw) -> argparse.Namespace:
    base = {"members": [1], "epochs": 1, "batch_size": 128, "device": "cpu", "repeats": 1, "channels": 32,
            "no_batchnorm": False, "data_order": "shared", "threads": None, "model": "cnn1d", "depth": None,
            "width": None, "samples": None, "precision": "fp32", "member_chunk": None, "compile": False,
            "no_vmap": True, "no_torchensemble": False}
    base.update(kw)
    return argparse.Namespace(**base)


def _mib(peak: int | None) -> float | None:
    """Peak bytes as MiB (``None`` on CPU, where the in-process peak is not measured)."""
    return None if peak is None else round(peak / 2**20, 1)


def _section_cnn1d(device: str, quick: bool, out: dict) -> None:
    members = [1, 2] if quick else [1, 5, 10]
    args = _ns(device=device, epochs=1 if quick else 5, samples=400 if quick else 20000, repeats=1 if quick else 2,
               batch_size=100, members=members)
    data, factory, desc = throughput.build(args)
    throughput.time_ensemblekit(data, factory, 2, args)  # warm-up
    rows = []
    for m in members:
        ek_t = min(throughput.time_ensemblekit(data, factory, m, args) for _ in range(args.repeats))
        loop_t = min(throughput.time_loop(data, factory, m, args) for _ in range(args.repeats))
        te = throughput.time_torchensemble(data, factory, m, args)
        rows.append({"members": m, "ensemblekit_s": ek_t[0], "loop_s": loop_t[0], "torchensemble_s": te[0] if te else None,
                     "peak_mib": _mib(ek_t[1])})
        print(f"  cnn1d M={m:2d}: ensemblekit {ek_t[0]:.2f}s  loop {loop_t[0]:.2f}s  torchensemble "
              f"{te[0] if te else float('nan'):.2f}s  -> vs loop {loop_t[0] / ek_t[0]:.2f}x", flush=True)
    out["cnn1d"] = {"workload": desc, "epochs": args.epochs, "rows": rows}


def _section_resnets(device: str, quick: bool, out: dict) -> None:
    members = [1, 2] if quick else [1, 4, 8]
    out["resnets"] = []
    for model, depth, width in (("resnet", 20, 4 if quick else 16), ("wrn", 10 if quick else 16, 1 if quick else 4)):
        for precision in ("fp32", "bf16"):
            args = _ns(device=device, model=model, depth=depth, width=width, samples=64 if quick else 10000,
                       batch_size=32 if quick else 128, precision=precision, members=members, no_torchensemble=True)
            data, factory, desc = throughput.build(args)
            throughput.time_ensemblekit(data, factory, 1, args)  # warm-up (cuDNN autotuning, allocator)
            for m in members:
                ek_t, ek_mem = throughput.time_ensemblekit(data, factory, m, args)
                loop_t, loop_mem = throughput.time_loop(data, factory, m, args)
                row = {"model": model, "depth": depth, "width": width, "precision": precision, "members": m,
                       "ensemblekit_s_per_epoch": ek_t, "loop_s_per_epoch": loop_t, "ensemblekit_peak_mib": _mib(ek_mem),
                       "loop_peak_mib": _mib(loop_mem), "examples": len(data.train)}
                out["resnets"].append(row)
                print(f"  {model}-{depth}-{width} {precision} M={m}: ensemblekit {ek_t:.2f}s/epoch ({_mib(ek_mem)} MiB)  "
                      f"loop {loop_t:.2f}s/epoch ({_mib(loop_mem)} MiB)  -> vs loop {loop_t / ek_t:.2f}x", flush=True)


def _section_compare(device: str, quick: bool, out: dict) -> None:
    from ensemblekit.config import CompareConfig
    from ensemblekit.experiments.compare import run_compare

    samples = 600 if quick else 100000
    cfg = CompareConfig(**{
        "name": "gpu-mnist1d-100k",
        "data": {"name": "mnist1d", "options": {"num_samples": samples}},
        "budget_unit": "epochs",
        "model": {"name": "cnn1d", "kwargs": {"channels": 16 if quick else 128}},
        "train": {"epochs": 1 if quick else 10, "batch_size": 256, "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
                  "device": device, "progress": False},
        "methods": [{"name": "independent", "label": "Single", "members": 1}, {"name": "independent", "label": "Ind"},
                    {"name": "fge", "label": "FGE"}],
        "budgets": [1, 3] if not quick else [1],
        "seeds": [0] if quick else [0, 1],
    })
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        table = run_compare(cfg, out_dir=os.path.join(tmp, "cmp"))
        elapsed = time.perf_counter() - t
    rows = [{"method": r["method"], "budget": r["budget"], "seed": r["seed"], "members": r["members"],
             "test_error_pct": r["test"]["error"], "test_nll": r["test"]["nll"], "wall_s": r["wall_s"]} for r in table.rows]
    out["compare"] = {"examples": samples, "seconds": elapsed, "rows": rows, "table": table.markdown}
    for r in rows:
        print(f"  {r['method']} {r['budget']}B seed {r['seed']}: error {r['test_error_pct']:.2f}%  NLL {r['test_nll']:.3f}  "
              f"({r['wall_s']:.1f}s training)", flush=True)
    print(f"  compare on {samples} MNIST-1D examples: {elapsed:.0f}s", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks the script, measures nothing useful")
    p.add_argument("--out", default=os.path.join(os.environ.get("OUT", "."), "gpu_benchmark.json"))
    p.add_argument("--sections", nargs="+", default=["cnn1d", "resnets", "compare"], choices=["cnn1d", "resnets", "compare"])
    args = p.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("benchmarks/gpu.py: CUDA is not available (use --device cpu --quick to check the script)")
    name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else f"cpu ({os.cpu_count()} cores)"
    out: dict = {"device": name, "torch": torch.__version__, "ensemblekit": ek.__version__, "quick": args.quick}
    print(f"device: {name}, torch {torch.__version__}", flush=True)
    start = time.perf_counter()
    for section in args.sections:
        print(f"[{section}]", flush=True)
        {"cnn1d": _section_cnn1d, "resnets": _section_resnets, "compare": _section_compare}[section](args.device, args.quick, out)
        out["seconds"] = time.perf_counter() - start
        with open(args.out, "w") as fh:  # after every section: a time-out keeps what was measured
            json.dump(out, fh, indent=1, default=str)
    print(f"done in {time.perf_counter() - start:.0f}s -> {args.out}")


if __name__ == "__main__":
    main()
