"""Early stopping per member: patience on a validation metric, each member's best weights restored."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from .callbacks import Callback
from .config import EarlyStoppingConfig

if TYPE_CHECKING:  # pragma: no cover
    from .engine import Trainer

__all__ = ["EarlyStopping"]


class EarlyStopping(Callback):
    """Track every member's validation metric; stop when none improved for ``patience`` evaluations.

    Each member keeps the weights (and BatchNorm statistics) of its own best epoch, which
    are restored when training ends. The best epochs are recorded in the history
    (``early_stopping`` in the last epoch's record).

    Args:
        config: patience, metric (``val_nll``, and for regression ``val_rmse``: lower is
            better; ``val_acc`` of a classifier: higher) and
            ``min_delta`` (the smallest change that counts as an improvement).
    """

    name = "early_stopping"

    def __init__(self, config: EarlyStoppingConfig) -> None:
        self.config = config
        self.best: torch.Tensor | None = None  # (M,)
        self.best_epoch: list[int] = []
        self.wait: list[int] = []
        self.snapshot: dict[str, torch.Tensor] = {}
        self.stopped_epoch: int | None = None

    def on_train_start(self, trainer: "Trainer") -> None:
        if trainer.data.val is None:
            from ..errors import ConfigError

            raise ConfigError("early_stopping needs a validation split (data val_fraction > 0 or x_val/y_val)")
        if self.best is None:
            m = trainer.ensemble.num_members
            sign = -1.0 if self.config.metric == "val_acc" else 1.0
            self.best = torch.full((m,), sign * float("inf"))
            self.best_epoch, self.wait = [0] * m, [0] * m
            self.snapshot = {k: v.detach().clone() for k, v in trainer.ensemble.state_tensors().items()}

    def on_epoch_end(self, trainer: "Trainer", epoch: int, logs: dict[str, Any]) -> None:
        key = {"val_nll": "val_member_nll", "val_acc": "val_member_accs", "val_rmse": "val_member_rmse"}[self.config.metric]
        if key not in logs or self.best is None:
            return
        values = torch.tensor(logs[key], dtype=torch.float64)
        better = values > self.best + self.config.min_delta if self.config.metric == "val_acc" else values < self.best - self.config.min_delta
        state = trainer.ensemble.state_tensors()
        slices = trainer.ensemble.member_slices()
        for m, improved in enumerate(better.tolist()):
            if improved:
                self.best[m] = values[m]
                self.best_epoch[m] = epoch
                self.wait[m] = 0
                self._copy_member(state, slices, m)
            else:
                self.wait[m] += 1
        if min(self.wait) >= self.config.patience:
            trainer.stop = True
            self.stopped_epoch = epoch
        logs["early_stopping"] = {"best_epoch": list(self.best_epoch), "best": self.best.tolist(), "stopped": trainer.stop}

    def _copy_member(self, state: dict[str, torch.Tensor], slices: dict[str, slice | None], m: int) -> None:
        """Copy member m's slice of every state tensor (``member_slices`` says which tensors hold it)."""
        for key, value in state.items():
            sl = slices[key]
            if sl is not None and sl.start <= m < sl.stop:
                self.snapshot[key][m - sl.start].copy_(value[m - sl.start].detach())

    def on_train_end(self, trainer: "Trainer") -> None:
        if self.snapshot:
            trainer.ensemble.load_state_tensors(self.snapshot)
            trainer.layout.refresh_from_model()

    def state_dict(self) -> dict[str, Any]:
        if self.best is None:
            return {}
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait, "snapshot": self.snapshot, "stopped_epoch": self.stopped_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self.best = state["best"].clone().to(torch.float64)
        self.best_epoch, self.wait = list(state["best_epoch"]), list(state["wait"])
        self.snapshot = {k: v.clone() for k, v in state["snapshot"].items()}
        self.stopped_epoch = state["stopped_epoch"]
