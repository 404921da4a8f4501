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

Regression (``--task regression``): the workload of Lakshminarayanan, Pritzel & Blundell,
"Simple and Scalable Predictive Uncertainty Estimation using Deep Ensembles" (NeurIPS 2017):
the registered ``mlp`` with one hidden layer of 50 ReLU units (``hidden=(50,)``) and a
Gaussian mean-variance head (model spec ``gaussian: true``: 2 outputs, the mean and a raw
variance, ``var = softplus(raw) + 1e-6``), trained on the Gaussian negative log-likelihood
with Adam (lr 0.01, as for classification) on standardised ``diabetes`` (10 features; its
90/10 train/test split, so 398 training rows; standardised with statistics of the training
rows) or, with ``--samples N``, on N rows of standardised synthetic data of the same shape
(10 features, one target). Defaults for this task: batch 32 (a small batch: 13 steps an
epoch on 398 rows, so per-step overhead, not arithmetic, dominates, which is what the
comparison is about; ``--batch-size 100`` for larger batches), 40 epochs (the paper's UCI
protocol trains 40), M = 1 5. Three implementations, interleaved, best of ``--repeats``:

- ensemblekit: ``Trainer`` over an ``Ensemble`` of M members (stacked engine),
  ``loss_fn=regression_loss("nll")``;
- one plain model: one ``nn.Sequential(Linear(10, 50), ReLU, Linear(50, 2))`` with its own
  Adam and the NLL written in plain torch (``F.gaussian_nll_loss`` on the softplus
  variance): the M = 1 reference of the claim "M = 5 members cost <= 1.5x one model";
- loop: M such plain models trained one after another, each with its own Adam.

The plain models take their batches by slicing a fresh permutation of the in-memory tensors
each epoch (the fast plain-torch way; ``--plain-batches dataloader`` uses a shuffled
``DataLoader`` over a ``TensorDataset`` instead, the usual script, whose per-batch collation
is then a large part of a step this small). Each row prints the times and the ratios
ensemblekit-M / one plain model and loop-of-M / ensemblekit-M (the speed-up).
torchensemble and the vmap path are not timed for regression.

    python benchmarks/throughput.py --task regression                # diabetes, CPU, 40 epochs, batch 32, M = 1 5
    python benchmarks/throughput.py --task regression --samples 442  # synthetic 442 x 10 instead
    python benchmarks/throughput.py --task regression --device cuda --members 1 5 10 --repeats 5
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import time
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import ensemblekit as ek
from ensemblekit.data import standardize
from ensemblekit.ensemble import Ensemble
from ensemblekit.models import model_factory
from ensemblekit.training import Trainer
from ensemblekit.training.regression_losses import regression_loss


def _plain_step(opt: torch.optim.Optimizer, scaler: Any, loss: torch.Tensor) -> None:
    """One optimizer step of a plain torch model (with fp16 loss scaling when ``scaler`` is given)."""
    opt.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        opt.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()


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


def time_ensemblekit(data: ek.Data, factory, members: int, args, kernels: str = "stacked", loss_fn=None) -> tuple[float, int]:
    cfg = {"epochs": args.epochs, "batch_size": args.batch_size, "optimizer": {"name": "adam", "lr": 0.01},
           "schedule": "constant", "data_order": args.data_order, "device": args.device, "progress": False,
           "precision": args.precision, "member_chunk": args.member_chunk, "compile": args.compile}
    with _kernels(kernels):
        ens = Ensemble.from_factory(factory, seeds=list(range(members)))
        trainer = Trainer(ens, data, cfg, seed=0, loss_fn=loss_fn)
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
                    _plain_step(opt, scaler, loss)

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


REGRESSION_HIDDEN = 50  # one hidden layer of 50 units (Lakshminarayanan et al. 2017, UCI regression)


def _plain_gaussian_mlp(in_dim: int) -> torch.nn.Module:
    """The regression network in plain torch: means in column 0, raw variances in column 1."""
    return torch.nn.Sequential(torch.nn.Linear(in_dim, REGRESSION_HIDDEN), torch.nn.ReLU(), torch.nn.Linear(REGRESSION_HIDDEN, 2))


def _plain_gaussian_nll(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean Gaussian NLL of ``out`` (B, 2) with ``var = softplus(raw) + 1e-6`` (what ``regression_loss("nll")`` computes)."""
    var = F.softplus(out[:, 1]) + 1e-6
    return F.gaussian_nll_loss(out[:, 0], y, var, full=True, eps=1e-6)


def time_plain_regression(data: ek.Data, members: int, args) -> tuple[float, int]:
    """``members`` plain torch networks trained one after another, each with its own Adam and the
    plain-torch Gaussian NLL (``members=1``: the one-model reference)."""
    torch.manual_seed(0)
    x, y = data.train.x.to(args.device), data.train.y.to(args.device)
    n, bs = x.shape[0], args.batch_size
    models = [_plain_gaussian_mlp(x[0].numel()).to(args.device) for _ in range(members)]
    opts = [torch.optim.Adam(m.parameters(), lr=0.01) for m in models]
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.precision)
    device_type = "cuda" if args.device.startswith("cuda") else "cpu"
    scaler = torch.amp.GradScaler(device_type) if args.precision == "fp16" else None
    loader = DataLoader(TensorDataset(x, y), batch_size=bs, shuffle=True) if args.plain_batches == "dataloader" else None

    def batches():
        if loader is not None:
            yield from loader
            return
        perm = torch.randperm(n, device=x.device)
        for i in range(0, n, bs):  # the last batch may be short, as the engine's (no drop_last)
            idx = perm[i:i + bs]
            yield x[idx], y[idx]

    def run() -> None:
        for model, opt in zip(models, opts):
            model.train()
            for _ in range(args.epochs):
                for xb, yb in batches():
                    with torch.autocast(device_type, dtype=dtype, enabled=dtype is not None):
                        out = model(xb)
                    loss = _plain_gaussian_nll(out.float(), yb)
                    _plain_step(opt, scaler, loss)

    return _timed(args.device, run)


def build_regression(args) -> tuple[ek.Data, object, str]:
    """Standardised diabetes (or synthetic data of its shape with ``--samples``), the Gaussian MLP factory, a description."""
    if args.samples:
        n, d = args.samples, 10
        g = torch.Generator().manual_seed(0)
        x = torch.randn(n + 10, d, generator=g)
        w = torch.randn(d, generator=g)
        y = torch.tanh(x @ w) + 0.3 * (1 + x[:, 0].abs()) * torch.randn(n + 10, generator=g)  # heteroscedastic, like real data
        raw = ek.from_arrays(x[:n].numpy(), y[:n].numpy(), x[n:].numpy(), y[n:].numpy(), val_fraction=0.0, task="regression",
                             name="diabetes-shaped")
        source = f"synthetic diabetes-shaped data ({d} features)"
    else:
        raw = ek.load_dataset("diabetes", val_fraction=0.0)
        source = "diabetes (90/10 split)"
    data, _ = standardize(raw)
    spec = {"name": "mlp", "kwargs": {"hidden": [REGRESSION_HIDDEN]}, "gaussian": True}
    factory = model_factory(spec, input_shape=data.input_shape, num_classes=data.num_outputs)
    ek_params = sum(p.numel() for p in factory().parameters())
    plain_params = sum(p.numel() for p in _plain_gaussian_mlp(data.input_shape[0]).parameters())
    assert ek_params == plain_params, (ek_params, plain_params)  # the same network on both sides
    desc = (f"regression: standardised {source}, {len(data.train)} train examples, mlp(hidden=({REGRESSION_HIDDEN},)) "
            f"+ gaussian head ({ek_params} parameters), Gaussian NLL, Adam lr 0.01, plain batches by {args.plain_batches}")
    return data, factory, desc


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
    p.add_argument("--task", default="classification", choices=["classification", "regression"],
                   help="regression: the Deep Ensembles MLP with a Gaussian head on diabetes (see above)")
    p.add_argument("--members", type=int, nargs="+", default=None, help="ensemble sizes (default 1 5 10; regression 1 5)")
    p.add_argument("--epochs", type=int, default=None, help="default 10 (regression 40)")
    p.add_argument("--batch-size", type=int, default=None, help="default 100 (regression 32)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=3, help="best of N interleaved runs per cell")
    p.add_argument("--channels", type=int, default=32)
    p.add_argument("--no-batchnorm", action="store_true")
    p.add_argument("--data-order", default="shared", choices=["shared", "per_member", "bootstrap"])
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--model", default="cnn1d", choices=["cnn1d", "resnet", "wrn"])
    p.add_argument("--depth", type=int, default=None, help="resnet/wrn depth (default 20 / 16)")
    p.add_argument("--width", type=int, default=None, help="resnet width / wrn widen factor (default 16 / 4)")
    p.add_argument("--samples", type=int, default=None, help="training examples (resnet/wrn: synthetic, default 1024; cnn1d: MNIST-1D "
                   "generated; regression: synthetic 10-feature data instead of diabetes)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--member-chunk", default=None, help="train.member_chunk for ensemblekit (an int or auto)")
    p.add_argument("--compile", action="store_true", help="train.compile for ensemblekit")
    p.add_argument("--no-vmap", action="store_true", help="skip the vmap path")
    p.add_argument("--no-torchensemble", action="store_true")
    p.add_argument("--plan", action="store_true", help="also time the grouped stacked plan (ENSEMBLEKIT_STACKED=plan; "
                   "on CPU the default for 2-D convolutional networks is the member loop)")
    p.add_argument("--plain-batches", default="slice", choices=["slice", "dataloader"],
                   help="regression: how the plain torch models get their batches (default: slicing a permutation of the tensors)")
    args = p.parse_args()
    regression = args.task == "regression"
    if args.members is None:
        args.members = [1, 5] if regression else [1, 5, 10]
    if args.epochs is None:
        args.epochs = 40 if regression else 10
    if args.batch_size is None:
        args.batch_size = 32 if regression else 100
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
    if regression:
        run_regression(args)
        return
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


def run_regression(args) -> None:
    """The regression table: ensemblekit M members vs one plain model vs a loop of M plain models."""
    data, factory, desc = build_regression(args)
    loss = regression_loss("nll")
    print(f"{desc}, {args.epochs} epochs, batch {args.batch_size}, device {_device_name(args.device)}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, data order {args.data_order}, precision {args.precision}; best of {args.repeats}")
    warm = argparse.Namespace(**{**vars(args), "epochs": 1})
    time_ensemblekit(data, factory, 2, warm, loss_fn=loss)  # warm-up
    time_plain_regression(data, 2, warm)
    rows = []
    for m in args.members:
        times: dict[str, list[tuple[float, int]]] = {"ek": [], "one": [], "loop": []}
        for _ in range(args.repeats):  # interleaved, so drifting machine noise hits every implementation alike
            times["ek"].append(time_ensemblekit(data, factory, m, args, loss_fn=loss))
            times["one"].append(time_plain_regression(data, 1, args))
            if m > 1:  # with one member the loop is the one plain model
                times["loop"].append(time_plain_regression(data, m, args))
        if m == 1:
            times["loop"] = times["one"]
        best = {k: min(t for t, _ in v) for k, v in times.items()}
        mem = {k: (max(b for _, b in v) / 2**20 if v[0][1] is not None else None) for k, v in times.items()}
        rows.append((m, best["ek"], best["one"], best["loop"]))
        print(f"M={m:3d}  ensemblekit {best['ek']:8.3f}s  one plain model {best['one']:8.3f}s  loop of {m} plain {best['loop']:8.3f}s   "
              f"ensemblekit-{m} / one plain model {best['ek'] / best['one']:5.2f}x   speed-up vs loop {best['loop'] / best['ek']:5.2f}x   "
              f"peak memory MiB: ensemblekit {_mib(mem['ek'])} one {_mib(mem['one'])} loop {_mib(mem['loop'])}", flush=True)
    one = {r[0]: r for r in rows}
    if 1 in one:
        base_ek = one[1][1]
        for m, ek_t, one_t, _ in rows:
            if m > 1:
                print(f"cost of {m} members / one model: {ek_t / one_t:5.2f}x (plain torch, one model)   "
                      f"{ek_t / base_ek:5.2f}x (ensemblekit M=1)")


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
