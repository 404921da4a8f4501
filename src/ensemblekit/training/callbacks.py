"""Hooks into the training loop, with state that is checkpointed with the run."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from ..data.batching import Batch
    from .engine import Trainer

__all__ = ["Callback"]


class Callback:
    """Base class: override what you need. ``state_dict`` values may be tensors, lists of
    tensors, nested dicts or JSON-able values; they are saved in every checkpoint and
    restored by ``load_state_dict`` on resume.
    """

    name: str = "callback"

    def on_train_start(self, trainer: "Trainer") -> None:
        """Called once before the first iteration (also after a resume)."""

    def on_step_end(self, trainer: "Trainer", step: int, batch: "Batch") -> None:
        """Called after optimizer step ``step`` (1-based count of iterations done)."""

    def on_epoch_end(self, trainer: "Trainer", epoch: int, logs: dict[str, Any]) -> None:
        """Called after epoch ``epoch`` (1-based) with its log record; may set ``trainer.stop = True``."""

    def on_train_end(self, trainer: "Trainer") -> None:
        """Called once after the last epoch (not when a finished stage is only reloaded)."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
