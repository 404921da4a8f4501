"""Experiment tracking: ``train.loggers: [tensorboard]``.

:class:`TensorBoardLogger` is a training callback that writes, through
``torch.utils.tensorboard`` (the ``tensorboard`` extra), one event file per stage under
``RUN_DIR/tensorboard/<stage>``, with the epoch as the step:

- ``train/loss``, ``train/accuracy``, ``train/lr`` (the ensemble's mean member);
- ``val/accuracy``, ``val/nll`` (the ensemble) and ``val/member_accuracy``;
- ``member<m>/val_accuracy`` and ``member<m>/val_nll`` for every member;
- for regression data instead of the accuracies: ``train/rmse`` (the members' mean RMSE),
  ``val/rmse``, ``val/nll``, ``val/crps`` (the ensemble's mixture, in the standardised units
  the members train in) and ``member<m>/val_rmse``, ``member<m>/val_nll``.

A resumed stage purges the events after its last checkpointed epoch, so the curves show
every epoch once. When the run is recorded (:func:`log_result`), the ensemble's size
curve (``size_curve/error``, ``size_curve/nll`` with the number of members as the step;
``size_curve/rmse``, ``size_curve/nll`` for regression), the reliability diagram as an image
(classification) and the run's hyperparameters with its test metrics (``test_error``,
``test_nll``, ``test_ece``; ``test_rmse``, ``test_nll``, ``test_crps`` for regression;
TensorBoard's HParams view: ``compare`` logs one run per cell) are added under
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


_EPOCH_TAGS = (("train_loss", "train/loss"), ("train_acc", "train/accuracy"), ("train_rmse", "train/rmse"), ("lr", "train/lr"),
               ("val_acc", "val/accuracy"), ("val_rmse", "val/rmse"), ("val_nll", "val/nll"), ("val_crps", "val/crps"),
               ("val_member_acc", "val/member_accuracy"))
"""(key of the epoch's log line, TensorBoard tag): the keys of either task; those a line lacks are skipped."""


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
        for key, tag in _EPOCH_TAGS:
            if logs.get(key) is not None:
                w.add_scalar(tag, float(logs[key]), epoch)
        for key, name in (("val_member_accs", "val_accuracy"), ("val_member_rmse", "val_rmse"), ("val_member_nll", "val_nll")):
            for m, value in enumerate(logs.get(key) or []):
                w.add_scalar(f"member{m}/{name}", float(value), epoch)
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
        test = row["test"]
        regression = "rmse" in test
        curve = test.get("size_curve") or {}
        for name in ("rmse", "nll") if regression else ("error", "nll"):
            for k, value in enumerate(curve.get(name) or [], start=1):
                w.add_scalar(f"size_curve/{name}", float(value), k)
        if reliability_png and os.path.isfile(reliability_png):
            import matplotlib.image as mpimg

            img = np.asarray(mpimg.imread(reliability_png))[..., :3]
            w.add_image("reliability", img, 0, dataformats="HWC")
        flat = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in hparams.items() if v is not None}
        metrics = ("rmse", "nll", "crps") if regression else ("error", "nll", "ece")
        w.add_hparams(flat, {f"hparam/test_{k}": float(test[k]) for k in metrics}, run_name=".")
    finally:
        w.close()

