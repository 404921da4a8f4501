"""Training throughput: ensemblekit's vectorised engine vs a per-model loop vs torchensemble.

Trains an M-member ``cnn1d`` ensemble on MNIST-1D (M = 1, 5, 10) for a fixed number of
epochs with each implementation, in one process, one after another, and prints the
times and their ratios. Only training is timed (no evaluation, no checkpoints).

    python benchmarks/throughput.py                 # CPU, 10 epochs, M = 1 5 10
    python benchmarks/throughput.py --device cuda   # on a GPU
    python benchmarks/throughput.py --repeats 3     # best of 3 per cell

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
    os.environ["ENSEMBLEKIT_STACKED"] = "0" if kind == "vmap" else "1"
    try:
        yield
    finally:
        if previous is None:
            del os.environ["ENSEMBLEKIT_STACKED"]
        else:
            os.environ["ENSEMBLEKIT_STACKED"] = previous


def time_ensemblekit(data: ek.Data, factory, members: int, args, kernels: str = "stacked") -> float:
    cfg = {"epochs": args.epochs, "batch_size": args.batch_size, "optimizer": {"name": "adam", "lr": 0.01},
           "schedule": "constant", "data_order": args.data_order, "device": args.device, "progress": False}
    with _kernels(kernels):
        ens = Ensemble.from_factory(factory, seeds=list(range(members)))
        trainer = Trainer(ens, data, cfg, seed=0)
    _sync(args.device)
    t = time.perf_counter()
    trainer.fit()
    _sync(args.device)
    return time.perf_counter() - t


def time_loop(data: ek.Data, factory, members: int, args) -> float:
    """M independent modules trained one after another, batches from a DataLoader (the usual script)."""
    torch.manual_seed(0)
    x, y = data.train.x.to(args.device), data.train.y.to(args.device)
    loader = DataLoader(TensorDataset(x, y), batch_size=args.batch_size, shuffle=True)
    models = [factory().to(args.device) for _ in range(members)]
    opts = [torch.optim.Adam(m.parameters(), lr=0.01) for m in models]
    _sync(args.device)
    t = time.perf_counter()
    for model, opt in zip(models, opts):
        model.train()
        for _ in range(args.epochs):
            for xb, yb in loader:
                loss = F.cross_entropy(model(xb), yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    _sync(args.device)
    return time.perf_counter() - t


def time_torchensemble(data: ek.Data, factory, members: int, args) -> float | None:
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
    _sync(args.device)
    t = time.perf_counter()
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # it prints a line per epoch
        warnings.simplefilter("ignore")
        ens.fit(loader, epochs=args.epochs, log_interval=10**9, save_model=False)
    _sync(args.device)
    return time.perf_counter() - t


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
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cpu":
        from ensemblekit._runtime import tune_allocator

        tune_allocator()  # what the engine does on CPU; applied first so every implementation gets it
    data = ek.load_dataset("mnist1d", val_fraction=0.0)
    factory = model_factory({"name": "cnn1d", "kwargs": {"channels": args.channels, "batchnorm": not args.no_batchnorm}},
                            input_shape=data.input_shape, num_classes=data.num_classes)
    print(f"MNIST-1D {len(data.train)} train examples, cnn1d(channels={args.channels}, batchnorm={not args.no_batchnorm}), "
          f"{args.epochs} epochs, batch {args.batch_size}, device {args.device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, data order {args.data_order}; best of {args.repeats}")
    time_ensemblekit(data, factory, 2, argparse.Namespace(**{**vars(args), "epochs": 1}))  # warm-up
    rows = []
    for m in args.members:
        times: dict[str, list[float]] = {"ek": [], "vmap": [], "loop": [], "te": []}
        for _ in range(args.repeats):  # interleaved, so drifting machine noise hits every implementation alike
            times["ek"].append(time_ensemblekit(data, factory, m, args))
            if m > 1:  # one member never goes through vmap
                times["vmap"].append(time_ensemblekit(data, factory, m, args, kernels="vmap"))
            times["loop"].append(time_loop(data, factory, m, args))
            te = time_torchensemble(data, factory, m, args)
            if te is not None:
                times["te"].append(te)
        best = {k: (min(v) if v else None) for k, v in times.items()}
        rows.append((m, best["ek"], best["loop"], best["te"]))
        print(f"M={m:3d}  ensemblekit {best['ek']:6.2f}s  (vmap path {_fmt(best['vmap'])})  loop {best['loop']:6.2f}s  "
              f"torchensemble {_fmt(best['te'])}   speed-up: vs loop {best['loop'] / best['ek']:5.2f}x  "
              f"vs torchensemble {_ratio(best['te'], best['ek'])}  stacked vs vmap {_ratio(best['vmap'], best['ek'])}", flush=True)
    one = {r[0]: r for r in rows}
    if 1 in one:
        base_ek, base_loop = one[1][1], one[1][2]
        for m, ek_t, _, _ in rows:
            if m > 1:
                print(f"cost of {m} members / one model: {ek_t / base_ek:5.2f}x (ensemblekit M=1)   "
                      f"{ek_t / base_loop:5.2f}x (plain loop, one model)")


def _fmt(t: float | None) -> str:
    return f"{t:6.2f}s" if t is not None else "   n/a "


def _ratio(slow: float | None, fast: float) -> str:
    return f"{slow / fast:5.2f}x" if slow is not None else "  n/a"


if __name__ == "__main__":
    main()
