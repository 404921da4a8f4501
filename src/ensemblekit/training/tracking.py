"""Experiment tracking: ``train.loggers: [tensorboard]``.

:class:`TensorBoardLogger` is a training callback that writes, through
``torch.utils.tensorboard`` (the ``tensorboard`` extra), one event file per stage under
``RUN_DIR/tensorboard/<stage>``, with the epoch as the step:

- ``train/loss``, ``train/accuracy``, ``train/lr`` (the ensemble's mean member);
- ``val/accuracy``, ``val/nll`` (the ensemble) and ``val/member_accuracy``;
- ``member<m>/val_accuracy`` and ``member<m>/val_nll`` for every member.

A resumed stage purges the events after its last checkpointed epoch, so the curves show
every epoch once. When the run is recorded (:func:`log_result`), the ensemble's size
curve (``size_curve/error``, ``size_curve/nll`` with the number of members as the step),
the reliability diagram as an image and the run's hyperparameters with its test metrics
(TensorBoard's HParams view: ``compare`` logs one run per cell) are added under
``RUN_DIR/tensorboard/result``.
"""

from __future__ import annotations

import importlib.util
import os
from typing import TYPE_CHECKING, Any, Mapping

from .callbacks import Callback

if TYPE_CHECKING:  # pragma: no cover
    from .engine import Trainer

__all__ = ["LOGGERS", "check_loggers", "TensorBoardLogger", "log_result"]

LOGGERS = ("tensorboard",)


def check_loggers(loggers: list[str]) -> list[str]:
    """The configured loggers, after checking that each is known and installed."""
    for name in loggers:
        if name not in LOGGERS:
            raise ValueError(f"unknown logger {name!r}; available: {', '.join(LOGGERS)}")
        if importlib.util.find_spec("tensorboard") is None:
            raise ValueError('the tensorboard logger needs the tensorboard package: pip install -e ".[tensorboard]"')
    return loggers


def _writer(log_dir: str, purge_step: int | None = None) -> Any:
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=log_dir, purge_step=purge_step)


class TensorBoardLogger(Callback):
    """Per-epoch scalars of a stage (see the module docstring)."""

    name = "tensorboard"

    def __init__(self, run_path: str, stage: str) -> None:
        self.log_dir = os.path.join(run_path, "tensorboard", stage)
        self.writer: Any = None

    def on_train_start(self, trainer: "Trainer") -> None:
        # purge_step drops events a killed run wrote after its last checkpoint
        self.writer = _writer(self.log_dir, purge_step=trainer.epoch + 1 if trainer.epoch else None)

    def on_epoch_end(self, trainer: "Trainer", epoch: int, logs: dict[str, Any]) -> None:
        w = self.writer
        if w is None:
            return
        for key, tag in (("train_loss", "train/loss"), ("train_acc", "train/accuracy"), ("lr", "train/lr"),
                         ("val_acc", "val/accuracy"), ("val_nll", "val/nll"), ("val_member_acc", "val/member_accuracy")):
            if key in logs:
                w.add_scalar(tag, float(logs[key]), epoch)
        for m, (acc, nll) in enumerate(zip(logs.get("val_member_accs", []), logs.get("val_member_nll", []))):
            w.add_scalar(f"member{m}/val_accuracy", float(acc), epoch)
            w.add_scalar(f"member{m}/val_nll", float(nll), epoch)
        w.flush()

    def on_train_end(self, trainer: "Trainer") -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def log_result(run_path: str, row: Mapping[str, Any], hparams: Mapping[str, Any], reliability_png: str | None = None) -> None:
    """The size curve, the reliability diagram and the hyperparameters with the test metrics of a recorded run."""
    import numpy as np

    w = _writer(os.path.join(run_path, "tensorboard", "result"))
    try:
        curve = row["test"].get("size_curve") or {}
        for k, (err, nll) in enumerate(zip(curve.get("error", []), curve.get("nll", [])), start=1):
            w.add_scalar("size_curve/error", float(err), k)
            w.add_scalar("size_curve/nll", float(nll), k)
        if reliability_png and os.path.isfile(reliability_png):
            import matplotlib.image as mpimg

            img = np.asarray(mpimg.imread(reliability_png))[..., :3]
            w.add_image("reliability", img, 0, dataformats="HWC")
        flat = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in hparams.items() if v is not None}
        test = row["test"]
        w.add_hparams(flat, {"hparam/test_error": float(test["error"]), "hparam/test_nll": float(test["nll"]),
                             "hparam/test_ece": float(test["ece"])}, run_name=".")
    finally:
        w.close()

