"""Fast Geometric Ensembling (Garipov et al. 2018): cyclic learning rate, a member at every cycle middle."""

from __future__ import annotations

import os
from typing import Any

from pydantic import Field, model_validator

from ..data.batching import steps_per_epoch
from ..data.dataset import Data
from ..ensemble import Ensemble
from ..errors import ConfigError, DataError
from ..models.registry import ModelFactory
from ..training.callbacks import Callback
from ..training.checkpoint import RunDir
from ..schema import StrictModel
from ..training.config import TrainConfig
from ..training.optim import optimizer_lr
from ..training.schedules import Schedule, build_schedule, fge_triangle, join
from .base import Method, register_method
from .collect import Collector, collection_report

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
class FGE(Method):
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
    """

    Params = FGEParams
    stage = "fge"

    @classmethod
    def at_budget(cls, budget: int, train: TrainConfig, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"epochs": budget * train.epochs, "budget_epochs": train.epochs}

    # ------------------------------------------------------------------ the trajectory
    def rates(self) -> tuple[float, float]:
        lr0 = optimizer_lr(self.train_config_.optimizer)
        p = self.params_
        a1 = p.a1 if p.a1 is not None else p.a1_factor * lr0
        a2 = p.a2 if p.a2 is not None else p.a2_factor * lr0
        if not a1 > a2:
            raise ConfigError(f"{self.name}: FGE needs a1 > a2, got a1={a1:g} and a2={a2:g}")
        return a1, a2

    def cycle_steps(self, spe: int) -> int:
        if self.params_.cycle is not None:
            return self.params_.cycle
        return max(2, 2 * int(round(self.params_.cycle_epochs * spe / 2)))

    def pretrain_steps(self, spe: int) -> int:
        if self.params_.init_from is not None:
            return 0
        budget = self.params_.budget_epochs or self.train_config_.epochs
        return int(round(self.params_.pretrain * budget * spe))

    def lr_policy(self, steps_per_epoch: int) -> tuple[Schedule, list[int]]:
        spe, cfg = steps_per_epoch, self.train_config_
        a1, a2 = self.rates()
        c, p = self.cycle_steps(spe), self.pretrain_steps(spe)
        total = cfg.epochs * spe
        if p >= total:
            raise ConfigError(f"{self.name}: pre-training ({p} iterations) leaves no room for cycles in {total} iterations; raise epochs or lower pretrain")
        cyclic = fge_triangle(a1, a2, c)
        if p:
            budget = (self.params_.budget_epochs or cfg.epochs) * spe
            pre = build_schedule(cfg.schedule, lr=optimizer_lr(cfg.optimizer), total_steps=budget, steps_per_epoch=spe)
            policy = join([pre, cyclic], [p])
        else:
            policy = cyclic
        marks = [s - 1 for s in range(p + c // 2, total + 1, c)]
        return policy, marks

    def collector(self, spe: int) -> Callback:
        c, p = self.cycle_steps(spe), self.pretrain_steps(spe)
        return Collector(lambda step: step > p and (step - p) % c == c // 2)

    def _check(self, data: Data, factory: ModelFactory) -> None:
        spe = steps_per_epoch(data.train, self.train_config_.batch_size)
        self.rates()
        _, marks = self.lr_policy(spe)
        if not marks:
            raise ConfigError(f"{self.name}: no cycle middle falls within {self.train_config_.epochs} epochs; raise epochs or shorten the cycle")

    def _trainable(self, factory: ModelFactory, data: Data) -> Ensemble:
        return Ensemble.from_factory(factory, members=1)

    def _warm_start(self, factory: ModelFactory) -> tuple[Ensemble, dict[str, Any] | None]:
        path = self.params_.init_from
        if path is None:
            return Ensemble.from_factory(factory, seeds=self.member_seeds(1)), None
        state = RunDir(path).load_checkpoint("train") if os.path.isdir(path) else None
        if state is None:
            raise DataError(f"{self.name}: init_from {path!r} is not a run directory with checkpoints/train.safetensors")
        members = next(iter(state["ensemble"].values())).shape[0]
        ensemble = Ensemble.from_factory(factory, seeds=self.member_seeds(members))
        ensemble.load_state_tensors(state["ensemble"])  # a shape mismatch means another architecture
        return ensemble, state

    def _trajectory(self, data: Data, factory: ModelFactory, run: RunDir | None) -> tuple[Ensemble, Callback]:
        spe = steps_per_epoch(data.train, self.train_config_.batch_size)
        policy, marks = self.lr_policy(spe)
        if not marks:
            raise ConfigError(f"{self.name}: no cycle middle falls within {self.train_config_.epochs} epochs; raise epochs or shorten the cycle")
        ensemble, state = self._warm_start(factory)
        collector = self.collector(spe)
        trained = self._train_stage(ensemble, data, run, self.stage, schedule=policy, callbacks=[collector], warm_start=state)
        return trained, collector

    def _fit(self, data: Data, factory: ModelFactory, run: RunDir | None) -> None:
        trained, collector = self._trajectory(data, factory, run)
        ensemble = collector.ensemble(trained)  # type: ignore[attr-defined]
        keep = self.params_.keep
        self.ensemble_ = ensemble.subset(range(len(ensemble) - keep, len(ensemble))) if keep and keep < len(ensemble) else ensemble

    def report(self, run: RunDir, data: Data) -> None:
        collection_report(self, run, data)
