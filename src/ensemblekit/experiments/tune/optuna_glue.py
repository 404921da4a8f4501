"""Where the search meets optuna: the pruning callback and the samplers."""

from __future__ import annotations

import threading
from typing import Any, Mapping

import optuna
from optuna.trial import FrozenTrial, TrialState

from ...training.callbacks import Callback
from .config import ParamSpec

__all__ = ["TrialReporter", "make_sampler"]


class TrialReporter(Callback):
    """Reports the per-epoch validation metric to an optuna trial and prunes when told to.

    Epochs are counted across a method's stages, so every report has its own step. When
    ``prune`` is on and the pruner says so, training stops after that epoch (its
    checkpoint is written) and :class:`optuna.TrialPruned` is raised at the end of the stage.
    ``stop`` (an event) aborts the trial at the next iteration (Ctrl-C with ``n_jobs > 1``).
    """

    name = "tune"

    def __init__(self, trial: Any, metric: str, prune: bool, stop: threading.Event | None = None) -> None:
        self.trial, self.metric, self.prune, self.stop = trial, metric, prune, stop
        self.epochs = 0
        self.pruned: str | None = None

    def on_step_end(self, trainer: Any, step: int, batch: Any) -> None:
        if self.stop is not None and self.stop.is_set():
            raise KeyboardInterrupt("the search was interrupted")

    def on_epoch_end(self, trainer: Any, epoch: int, logs: dict[str, Any]) -> None:
        self.epochs += 1
        if self.metric not in logs:
            return
        value = float(logs[self.metric])
        self.trial.report(value, self.epochs)
        if self.prune and self.trial.should_prune():
            self.pruned = f"pruned after epoch {self.epochs} ({self.metric} = {value:.4g})"
            trainer.stop = True

    def on_train_end(self, trainer: Any) -> None:
        if self.pruned is not None:
            raise optuna.TrialPruned(self.pruned)


class _Grid(optuna.samplers.GridSampler):
    """GridSampler whose ``after_trial`` does not call ``study.stop`` (that only works inside
    ``optimize``, and fails for queued retries); the trial count ends the stage instead."""

    def after_trial(self, study: Any, trial: FrozenTrial, state: TrialState, values: Any) -> None:
        return None


def make_sampler(name: str, space: Mapping[str, ParamSpec], seed: int) -> optuna.samplers.BaseSampler:
    """The optuna sampler for ``search.sampler``: grid | random | tpe (default)."""
    if name == "grid":
        return _Grid({k: p.grid_values() for k, p in space.items()}, seed=seed)  # type: ignore[misc]
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)
