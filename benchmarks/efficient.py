"""Speed of the parameter-sharing ensembles next to a stacked independent ensemble, in one run.

For M = 4 members it times, per epoch, the training (the engine's own loop: forward,
backward, optimizer step) and the inference (one pass over the test split) of

- ``Ind``: four independent members, stacked (grouped kernels / vmap);
- ``BatchEnsemble``, ``Packed`` (alpha 2), ``MIMO``, ``Masksembles``: one network with four members;
- ``MC-dropout``: one network trained, four stochastic passes at inference;
- ``Single``: one network, the unit the ratios are read against;

for the MNIST-1D ``cnn1d`` and for a ResNet-20 on synthetic 3x32x32 inputs, interleaved
(every method once per repeat, best of the repeats), and prints seconds and ratios to Ind.

    python benchmarks/efficient.py                       # CPU, both models, best of 3
    python benchmarks/efficient.py --model resnet --device cuda --repeats 5
    ensemblekit --threads 1 ...  (run nothing else at the same time: timings are shared-machine sensitive)
"""

from __future__ import annotations

import argparse
import time

import torch

import ensemblekit as ek
from ensemblekit.methods.base import create_method

METHODS = {
    "Single": ("independent", {"members": 1}),
    "Ind": ("independent", {"members": 4}),
    "BatchEnsemble": ("batch_ensemble", {"members": 4}),
    "Packed": ("packed", {"members": 4, "alpha": 2}),
    "MIMO": ("mimo", {"members": 4}),
    "Masksembles": ("masksembles", {"members": 4}),
    "MC-dropout": ("mc_dropout", {"members": 4}),
}


def _data(kind: str, n: int) -> tuple[ek.Data, dict]:
    if kind == "cnn1d":
        return ek.load_dataset("mnist1d"), {"name": "cnn1d"}
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return ek.from_arrays(x, y, x[: n // 4], y[: n // 4], val_fraction=0.0, name="synthetic-32x32"), {"name": "resnet", "kwargs": {"depth": 20}}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_method(name: str, data: ek.Data, model: dict, args: argparse.Namespace) -> tuple[float, float]:
    """Seconds per training epoch (after one warm-up epoch) and per inference pass over the test split."""
    method, params = METHODS[name]
    m = create_method(method, model=model, epochs=args.epochs + 1, batch_size=args.batch_size, device=args.device, progress=False,
                      schedule="constant", optimizer={"name": "adam", "lr": 0.01}, **params)
    m.fit(data)
    train_s = [h["wall_s"] for h in m.history_ if "wall_s" in h]
    per_epoch = (train_s[-1] - train_s[0]) / max(1, len(train_s) - 1)  # the first epoch warms the kernels up
    ens = m.ensemble_
    ens.predict_proba(data.test.x[:256])
    _sync(args.device)
    t0 = time.perf_counter()
    ens.predict_proba(data.test)
    _sync(args.device)
    return per_epoch, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["cnn1d", "resnet", "both"], default="both")
    ap.add_argument("--epochs", type=int, default=2, help="timed epochs (after one warm-up epoch)")
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--samples", type=int, default=2000, help="synthetic training examples for the ResNet")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    kinds = ["cnn1d", "resnet"] if args.model == "both" else [args.model]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), device {args.device}"
          + (f" ({torch.cuda.get_device_name(0)})" if args.device.startswith("cuda") else ""))
    for kind in kinds:
        data, model = _data(kind, args.samples)
        best: dict[str, list[float]] = {n: [float("inf"), float("inf")] for n in METHODS}
        for _ in range(args.repeats):
            for name in METHODS:
                tr, inf = time_method(name, data, model, args)
                best[name] = [min(best[name][0], tr), min(best[name][1], inf)]
        ind = best["Ind"]
        print(f"\n{kind} ({data.name}, {len(data.train)} train / {len(data.test)} test, batch {args.batch_size}), M = 4, best of {args.repeats}:")
        print(f"| method | train s/epoch | vs Ind | inference s | vs Ind |\n|---|---|---|---|---|")
        for name, (tr, inf) in best.items():
            print(f"| {name} | {tr:.3f} | {tr / ind[0]:.2f}x | {inf:.3f} | {inf / ind[1]:.2f}x |")


if __name__ == "__main__":
    main()
