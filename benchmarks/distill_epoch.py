"""What a student's epoch costs next to a normal epoch of the same network, in one run.

For the MNIST-1D ``cnn1d`` (batch 100, Adam 0.01) it trains a 5-member ensemble (the teacher),
caches its predictions on the training split once, and times epochs of one ``cnn1d``:

- ``labels``: cross-entropy on the labels (the normal epoch);
- ``kd`` / ``end2`` / ``hydra``: the distillation losses on the cached predictions (looked up by
  example index), the bar being <= 1.3x the normal epoch;
- ``kd, mixup (streamed)``: with ``train.mixup`` the inputs change every step, so the teacher's
  five members run on every batch: the cost of a teacher forward per input the student sees.

Each epoch is timed ``--repeats`` times, the variants interleaved, best kept; the teacher's
predictions are computed once before (and timed once: they are the row's ``teacher_predictions``).

    python benchmarks/distill_epoch.py --threads 1 --repeats 5
    (run nothing else at the same time: timings are shared-machine sensitive)
"""

from __future__ import annotations

import argparse
import time

import torch

import ensemblekit as ek
from ensemblekit.distill import StreamedTeacher, distill_loss_fn, teacher_targets
from ensemblekit.efficient.heads import to_heads
from ensemblekit.efficient.shared import SharedEnsemble
from ensemblekit.ensemble import Ensemble
from ensemblekit.models.registry import model_factory
from ensemblekit.training.config import TrainConfig
from ensemblekit.training.engine import Trainer

TRAIN = {"batch_size": 100, "optimizer": {"name": "adam", "lr": 0.01}, "progress": False}


def _epoch(data: ek.Data, model_fn, loss_fn, **train) -> float:
    trainer = Trainer(model_fn(), data, TrainConfig(epochs=1, **{**TRAIN, **train}), loss_fn=loss_fn)
    trainer.fit()
    return trainer.wall_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = ek.load_dataset("mnist1d")
    teacher = ek.create_method("independent", model="cnn1d", members=5, epochs=5, progress=False, **{k: v for k, v in TRAIN.items() if k != "progress"})
    teacher.fit(data)
    start = time.perf_counter()
    targets = teacher_targets(teacher.ensemble_, data.train)
    cache_s = time.perf_counter() - start
    factory = model_factory("cnn1d", input_shape=data.input_shape, num_classes=data.num_classes)
    one = lambda: Ensemble.from_factory(factory, members=1)  # noqa: E731
    heads = lambda: SharedEnsemble(to_heads(factory(), members=5), "heads", {"members": 5}, factory.spec)  # noqa: E731
    variants = {
        "labels": (one, None, {}),
        "kd": (one, distill_loss_fn("kd", targets, temperature=2.0), {}),
        "end2": (one, distill_loss_fn("end2", targets), {}),
        "hydra (5 heads)": (heads, distill_loss_fn("hydra", targets), {}),
        "kd, mixup (streamed)": (one, distill_loss_fn("kd", None, stream=StreamedTeacher(teacher.ensemble_, 2)), {"mixup": 0.4}),
        "labels, mixup": (one, None, {"mixup": 0.4}),
    }
    best = {k: float("inf") for k in variants}
    for _ in range(args.repeats):
        for name, (model_fn, loss_fn, train) in variants.items():
            best[name] = min(best[name], _epoch(data, model_fn, loss_fn, **train))
    print(f"cnn1d on MNIST-1D ({len(data.train)} training examples), torch threads {torch.get_num_threads()}; "
          f"teacher predictions cached once in {cache_s:.3f} s")
    print(f"{'epoch':24s} {'seconds':>8s} {'x labels':>9s}")
    for name, s in best.items():
        base = best["labels, mixup"] if "mixup" in name else best["labels"]
        print(f"{name:24s} {s:8.3f} {s / base:8.2f}x")


if __name__ == "__main__":
    main()
