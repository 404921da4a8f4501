"""How FGE's defaults were chosen: test error at 1B on MNIST-1D for several cycle settings.

Trains, for each optimizer recipe (Adam; SGD with momentum) and each variant (one model,
SSE, SWA, FGE with several a1/a2 factors, cycle lengths and pre-training shares), one
30-epoch budget per seed, and prints the mean test error. FGE's
defaults be measured on the data at hand rather than copied from CIFAR.

    python benchmarks/fge_defaults.py --seeds 0 1
"""

from __future__ import annotations

import argparse

import ensemblekit as ek

RECIPES = {
    "adam": {"optimizer": {"name": "adam", "lr": 0.01}, "schedule": "cosine"},
    "sgd": {"optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4}, "schedule": "cosine"},
}
VARIANTS = [
    ("one model", "independent", {"members": 1}),
    ("SSE 5 cycles", "snapshot", {"cycles": 5}),
    ("SWA (defaults)", "swa", {}),
    ("FGE a1=2lr a2=.02lr c=1 p=.6", "fge", {"a1_factor": 2, "a2_factor": 0.02, "cycle_epochs": 1, "pretrain": 0.6}),
    ("FGE a1=1lr a2=.01lr c=1 p=.6", "fge", {"a1_factor": 1, "a2_factor": 0.01, "cycle_epochs": 1, "pretrain": 0.6}),
    ("FGE a1=.5lr a2=.1lr c=2 p=.8 (paper)", "fge", {"a1_factor": 0.5, "a2_factor": 0.1, "cycle_epochs": 2, "pretrain": 0.8}),
    ("FGE a1=1lr a2=.05lr c=2 p=.6", "fge", {"a1_factor": 1, "a2_factor": 0.05, "cycle_epochs": 2, "pretrain": 0.6}),
    ("FGE a1=.5lr a2=.01lr c=1 p=.5", "fge", {"a1_factor": 0.5, "a2_factor": 0.01, "cycle_epochs": 1, "pretrain": 0.5}),
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--epochs", type=int, default=30)
    args = p.parse_args()
    data = ek.load_dataset("mnist1d")
    for recipe, train in RECIPES.items():
        for label, name, params in VARIANTS:
            errors = []
            for seed in args.seeds:
                m = ek.create_method(name, model="cnn1d", epochs=args.epochs, progress=False, seed=seed, **train, **params).fit(data)
                errors.append(ek.evaluate(m.ensemble_, data.test)["error"])
            print(f"{recipe:5s} {label:38s} members={len(m.ensemble_):3d}  test error {sum(errors) / len(errors):5.2f}%  {[round(e, 2) for e in errors]}", flush=True)


if __name__ == "__main__":
    main()
