"""Snapshot ensembles (Huang et al. 2017): one run, cosine annealing with warm restarts, a member per cycle."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from ..data.dataset import Data
from ..errors import ConfigError
from ..ensemble import Ensemble
from ..training.checkpoint import RunDir
from ..schema import StrictModel
from ..training.config import TrainConfig
from .base import register_method
from .collect import Collector, collection_report, last_members
from .trajectory import CollectionPoints, RestartsSchedule, TrajectoryMethod

__all__ = ["Snapshot"]


@register_method("snapshot")
class Snapshot(TrajectoryMethod):
    """One network trained with cosine annealing with warm restarts; the weights at the end
    of every cycle (learning rate at its minimum) are the members (docs/methods.md, snapshot).

    Per iteration inside a cycle of T iterations: ``lr(t) = min_lr + 0.5 (lr0 - min_lr)
    (1 + cos(pi t / T))``, ``t = step mod T``, where ``lr0`` is the optimizer's ``lr``.
    Budget: the whole run (``epochs``); kB = k times the epochs of one model, with the
    same cycle length, so k times as many snapshots. ``train.schedule`` is not used.

    Args:
        cycles: number of cycles over the run (default 5; Huang et al.'s recipe).
        cycle_epochs: cycle length in epochs instead (wins over ``cycles``).
        keep: use only the last ``keep`` snapshots (default: all).
        min_lr: the rate at the end of each cycle (default 0).

    Parts: :class:`~ensemblekit.methods.trajectory.RestartsSchedule` (the policy and its cycle
    ends) and :class:`~ensemblekit.methods.collect.Collector` (a snapshot at each).

    Paper: Huang, Li, Pleiss, Liu, Hopcroft & Weinberger, "Snapshot Ensembles: Train 1, Get M
    for Free", ICLR 2017.
    """

    stage = "snapshot"

    knobs = {"cycles": {"type": "int", "low": 2, "high": 8}, "min_lr": {"type": "float", "low": 0.0, "high": 0.01}}  # tuning: docs/comparisons.md
    class Params(StrictModel):
        cycles: int = Field(5, ge=1)
        cycle_epochs: float | None = Field(None, gt=0)
        keep: int | None = Field(None, ge=1)
        min_lr: float = Field(0.0, ge=0)

        @model_validator(mode="after")
        def _keep(self) -> "Snapshot.Params":
            if self.keep is not None and self.cycle_epochs is None and self.keep > self.cycles:
                raise ValueError(f"keep ({self.keep}) cannot exceed cycles ({self.cycles})")
            return self

    @classmethod
    def at_budget(cls, budget: int, train: TrainConfig, params: dict[str, Any] | None = None) -> dict[str, Any]:
        p = cls.Params(**(params or {}))
        cycle = p.cycle_epochs if p.cycle_epochs is not None else train.epochs / p.cycles
        return {"epochs": budget * train.epochs, "cycle_epochs": cycle}

    def schedule(self) -> RestartsSchedule:
        return RestartsSchedule(self.name, self.params_, self.train_config_)

    def collector(self, points: CollectionPoints) -> Collector:
        return Collector(points)

    def finish(self, trained: Ensemble, collector: Collector, data: Data) -> Ensemble:
        return last_members(collector.ensemble(trained), self.params_.keep)

    def report(self, run: RunDir, data: Data) -> None:
        collection_report(self, run, data)
