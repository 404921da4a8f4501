"""Snapshot ensembles (Huang et al. 2017): one run, cosine annealing with warm restarts, a member per cycle."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from ..data.batching import steps_per_epoch
from ..data.dataset import Data
from ..errors import ConfigError
from ..ensemble import Ensemble
from ..models.registry import ModelFactory
from ..training.checkpoint import RunDir
from ..schema import StrictModel
from ..training.config import TrainConfig
from ..training.optim import optimizer_lr
from ..training.schedules import Schedule, cosine_restarts
from .base import Method, register_method
from .collect import Collector, collection_report

__all__ = ["Snapshot"]


@register_method("snapshot")
class Snapshot(Method):
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
    """

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

    def cycle_steps(self, steps_per_epoch: int) -> int:
        total = self.train_config_.epochs * steps_per_epoch
        if self.params_.cycle_epochs is not None:
            return max(1, int(round(self.params_.cycle_epochs * steps_per_epoch)))
        return max(1, total // self.params_.cycles)

    def lr_policy(self, steps_per_epoch: int) -> tuple[Schedule, list[int]]:
        cycle = self.cycle_steps(steps_per_epoch)
        total = self.train_config_.epochs * steps_per_epoch
        policy = cosine_restarts(optimizer_lr(self.train_config_.optimizer), cycle, self.params_.min_lr)
        marks = [s - 1 for s in range(cycle, total + 1, cycle)]
        return policy, marks

    def _check(self, data: Data, factory: ModelFactory) -> None:
        spe = steps_per_epoch(data.train, self.train_config_.batch_size)
        total, cycle = self.train_config_.epochs * spe, self.cycle_steps(spe)
        if self.params_.cycle_epochs is None and total // self.params_.cycles < 1:
            raise ConfigError(f"snapshot: cycles = {self.params_.cycles} need at least one iteration each, and the run has {total} "
                              f"({self.train_config_.epochs} epochs x {spe}); lower cycles or raise epochs")
        if cycle > total:
            raise ConfigError(f"snapshot: a cycle of {cycle} iterations does not fit in the run's {total} iterations "
                              f"({self.train_config_.epochs} epochs x {spe}); lower cycles / cycle_epochs or raise epochs")

    def _trainable(self, factory: ModelFactory, data: Data) -> Ensemble:
        return Ensemble.from_factory(factory, members=1)

    def _fit(self, data: Data, factory: ModelFactory, run: RunDir | None) -> None:
        trajectory = Ensemble.from_factory(factory, seeds=self.member_seeds(1))
        spe = steps_per_epoch(data.train, self.train_config_.batch_size)
        policy, _ = self.lr_policy(spe)
        cycle = self.cycle_steps(spe)
        collector = Collector(lambda step: step % cycle == 0)
        trained = self._train_stage(trajectory, data, run, "snapshot", schedule=policy, callbacks=[collector])
        if not collector.snapshots:
            from ..errors import ConfigError

            raise ConfigError(f"snapshot: no cycle ended within {self.train_config_.epochs} epochs; shorten cycle_epochs")
        ensemble = collector.ensemble(trained)
        keep = self.params_.keep
        self.ensemble_ = ensemble.subset(range(len(ensemble) - keep, len(ensemble))) if keep and keep < len(ensemble) else ensemble

    def report(self, run: RunDir, data: Data) -> None:
        collection_report(self, run, data)
