"""Fast Geometric Ensembling (Garipov et al. 2018): cyclic learning rate, a member at every cycle middle."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from ..data.dataset import Data
from ..ensemble import Ensemble
from ..models.registry import ModelFactory
from ..training.checkpoint import RunDir
from ..schema import StrictModel
from ..training.config import TrainConfig
from .base import register_method
from .collect import Collector, collection_report, last_members
from .trajectory import CollectionPoints, CyclicSchedule, TrajectoryMethod, cyclic_budget, trajectory_start

__all__ = ["FGE", "FGEParams"]


class FGEParams(StrictModel):
    pretrain: float = Field(0.6, gt=0, le=1)
    budget_epochs: int | None = Field(None, ge=1)
    cycle_epochs: float = Field(1.0, gt=0)
    cycle: int | None = Field(None, ge=2)
    a1: float | None = Field(None, gt=0)
    a2: float | None = Field(None, gt=0)
    a1_factor: float = Field(2.0, gt=0)
    a2_factor: float = Field(0.02, gt=0)
    init_from: str | None = None
    keep: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _check(self) -> "FGEParams":
        if self.cycle is not None and self.cycle % 2:
            raise ValueError(f"cycle must be an even number of iterations >= 2, got {self.cycle}")
        a1, a2 = self.a1 or self.a1_factor, self.a2 or self.a2_factor
        if (self.a1 is None) == (self.a2 is None) and not a1 > a2:
            raise ValueError(f"FGE needs a1 > a2, got a1={a1} and a2={a2}")
        return self


@register_method("fge")
class FGE(TrajectoryMethod):
    """Fast Geometric Ensembling (docs/methods.md, fge).

    Pre-train one network with ``train.schedule`` (the policy of a ``budget_epochs`` run,
    stopped after a fraction ``pretrain`` of it), then follow the cyclic piecewise-linear
    policy of cycle ``c`` iterations from ``a1`` down to ``a2`` and back; the weights
    after every cycle middle (``lr = a2``) are the members. The optimizer state (momentum
    buffers) carries over from pre-training. Budget: the whole run (``epochs``); kB =
    pre-training inside the first B plus cycles over the rest.

    Args:
        pretrain: share of ``budget_epochs`` spent pre-training (default 0.6; the paper's
            code uses ~0.8 — measured on MNIST-1D, an earlier start helped).
        budget_epochs: the length of the run whose policy pre-training follows (default:
            ``epochs``; ``compare`` sets it to one budget's epochs).
        cycle_epochs: cycle length in epochs (default 1), rounded to an even number of
            iterations; or ``cycle`` in iterations (even, >= 2).
        a1, a2: the largest and smallest rates (a1 > a2 > 0); by default ``a1_factor``
            (2.0) and ``a2_factor`` (0.02) times the optimizer's ``lr`` — a wide range and
            short cycles, chosen by measurement on MNIST-1D (the paper's CIFAR values
            a1 = lr0/2, a2 = lr0/10 gave no gain there; docs/methods.md, fge).
        init_from: a run directory written by ``ensemblekit train`` to start from instead
            of pre-training (its final weights and optimizer state are loaded).
        keep: use only the last ``keep`` members.

    Parts: :class:`~ensemblekit.methods.trajectory.CyclicSchedule` (the policy and its cycle
    middles) and :class:`~ensemblekit.methods.collect.Collector` (a snapshot at each).

    Paper: Garipov, Izmailov, Podoprikhin, Vetrov & Wilson, "Loss Surfaces, Mode Connectivity,
    and Fast Ensembling of DNNs", NeurIPS 2018.
    """

    Params = FGEParams
    knobs = {"cycle_epochs": {"type": "categorical", "choices": [0.5, 1.0, 2.0]}, "a1_factor": {"type": "float", "low": 1.0, "high": 4.0},
             "a2_factor": {"type": "float", "low": 0.005, "high": 0.1, "log": True}, "pretrain": {"type": "float", "low": 0.4, "high": 0.8}}
    stage = "fge"

    @classmethod
    def at_budget(cls, budget: int, train: TrainConfig, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return cyclic_budget(budget, train)

    def schedule(self) -> CyclicSchedule:
        return CyclicSchedule(self.name, self.params_, self.train_config_)

    def collector(self, points: CollectionPoints) -> Collector:
        return Collector(points)

    def start(self, factory: ModelFactory) -> tuple[Ensemble, dict[str, Any] | None]:
        return trajectory_start(self.name, factory, self.member_seeds, init_from=self.params_.init_from)

    def finish(self, trained: Ensemble, collector: Collector, data: Data) -> Ensemble:
        return last_members(collector.ensemble(trained), self.params_.keep)

    def report(self, run: RunDir, data: Data) -> None:
        collection_report(self, run, data)
