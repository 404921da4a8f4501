"""One training trajectory, collected: the parts that snapshot ensembles, FGE, SWA and SWAG are made of.

A trajectory method trains one network (or R side by side) along a learning-rate policy and,
at fixed iterations of it, keeps something of the weights. It is three small parts:

- a *schedule*: the policy ``step -> lr`` and its :class:`CollectionPoints`
  (:class:`CyclicSchedule`: pre-training, then the triangle cycles of Fast Geometric
  Ensembling, collected at every cycle middle, Garipov et al. 2018; optionally a constant
  rate instead of the cycles, as SWA allows, Izmailov et al. 2018. :class:`RestartsSchedule`:
  cosine annealing with warm restarts, collected at every cycle end, Huang et al. 2017);
- a *collector*: the callback that keeps, at each collection point, a snapshot of the weights
  (:class:`~ensemblekit.methods.collect.Collector`: FGE, snapshot ensembles), their running
  average (:class:`~ensemblekit.methods.collect.Averager`: SWA) or their first and second
  moments and last deviations (:class:`~ensemblekit.efficient.swag.SWAGCollector`: SWAG,
  Maddox et al. 2019);
- a *finish*: the ensemble made of what was collected.

:class:`TrajectoryMethod` runs them; each method names its parts (docs/methods.md: snapshot,
fge, swa, swag).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

from ..data.batching import steps_per_epoch
from ..data.dataset import Data
from ..ensemble import Ensemble
from ..errors import ConfigError, DataError
from ..models.registry import ModelFactory
from ..training.callbacks import Callback
from ..training.checkpoint import RunDir
from ..training.config import TrainConfig
from ..training.optim import optimizer_lr
from ..training.schedules import Schedule, build_schedule, constant, cosine_restarts, fge_triangle, join
from .base import BOTH_TASKS, Method

__all__ = ["CollectionPoints", "Policy", "CyclicSchedule", "RestartsSchedule", "TrajectoryMethod", "cyclic_budget", "trajectory_start"]


@dataclass(frozen=True)
class CollectionPoints:
    """The iterations at which a trajectory is collected: every ``period`` iterations after
    the first ``start``, ``offset`` iterations into each period (``offset = 0``: at its end).

    Called with ``step``, the number of iterations done (>= 1), it says whether ``step`` is a
    collection point: ``step > start and (step - start) mod period == offset``.

    Args:
        period: iterations between two collections (>= 1).
        start: iterations before the first period begins (>= 0; default 0), e.g. FGE's pre-training.
        offset: where in each period the collection falls (``0 <= offset < period``; default 0).

    Example:
        >>> points = CollectionPoints(period=8, start=40, offset=4)   # FGE: cycles of 8 after 40
        >>> points(44), points(48), points.steps(80)
        (True, False, [44, 52, 60, 68, 76])
    """

    period: int
    start: int = 0
    offset: int = 0

    def __post_init__(self) -> None:
        if self.period < 1 or self.start < 0 or not 0 <= self.offset < self.period:
            raise ValueError(f"collection points need period >= 1, start >= 0 and 0 <= offset < period, got {self}")

    def __call__(self, step: int) -> bool:
        return step > self.start and (step - self.start) % self.period == self.offset

    def steps(self, total: int) -> list[int]:
        """Every collection point in a run of ``total`` iterations, in order."""
        first = self.start + (self.offset - 1) % self.period + 1
        return list(range(first, total + 1, self.period))


@dataclass(frozen=True)
class Policy:
    """A run's learning-rate policy ``lr(step)`` (step 0-based), its collection points and its length."""

    lr: Schedule
    points: CollectionPoints
    total: int

    @property
    def marks(self) -> list[int]:
        """The 0-based iterations after which a collection happens (the policy's ``lr`` index)."""
        return [s - 1 for s in self.points.steps(self.total)]


def cyclic_budget(budget: int, train: TrainConfig) -> dict[str, Any]:
    """kB for a cyclic trajectory: one run of ``budget * train.epochs`` epochs whose pre-training
    follows the policy of one single-model run."""
    return {"epochs": budget * train.epochs, "budget_epochs": train.epochs}


@dataclass(frozen=True)
class CyclicSchedule:
    """Pre-training with ``train.schedule`` (the policy of a ``budget_epochs`` run, stopped after
    a share ``pretrain`` of it), then FGE's triangle cycles of ``c`` iterations from ``a1`` down
    to ``a2`` and back (Garipov et al. 2018), or ``constant_lr`` instead of the cycles (SWA's
    ``swa_lr``, Izmailov et al. 2018); collected at every cycle middle (``lr = a2``).

    Args:
        name: the method's name (errors start with it).
        params: the method's validated hyperparameters (``FGEParams`` or one that extends them).
        train: the validated training config.
        constant_lr: the rate after pre-training instead of the cycles (default: the cycles).
    """

    name: str
    params: Any
    train: TrainConfig
    constant_lr: float | None = None

    def rates(self) -> tuple[float, float]:
        """``(a1, a2)``: given, or the factors times the optimizer's ``lr``."""
        lr0 = optimizer_lr(self.train.optimizer)
        p = self.params
        a1 = p.a1 if p.a1 is not None else p.a1_factor * lr0
        a2 = p.a2 if p.a2 is not None else p.a2_factor * lr0
        if not a1 > a2:
            raise ConfigError(f"{self.name}: FGE needs a1 > a2, got a1={a1:g} and a2={a2:g}")
        return a1, a2

    def cycle_steps(self, spe: int) -> int:
        """c: ``cycle``, or ``cycle_epochs`` rounded to an even number of iterations (>= 2)."""
        if self.params.cycle is not None:
            return self.params.cycle
        return max(2, 2 * int(round(self.params.cycle_epochs * spe / 2)))

    def pretrain_steps(self, spe: int) -> int:
        """Iterations of pre-training (none when starting from ``init_from``)."""
        if self.params.init_from is not None:
            return 0
        budget = self.params.budget_epochs or self.train.epochs
        return int(round(self.params.pretrain * budget * spe))

    def policy(self, spe: int) -> Policy:
        cfg = self.train
        a1, a2 = self.rates()
        c, p = self.cycle_steps(spe), self.pretrain_steps(spe)
        total = cfg.total_steps(spe)
        if p >= total:
            raise ConfigError(f"{self.name}: pre-training ({p} iterations) leaves no room for cycles in {total} iterations; raise epochs or lower pretrain")
        lr = fge_triangle(a1, a2, c)
        if p:
            budget = (self.params.budget_epochs or cfg.epochs) * spe
            pre = build_schedule(cfg.schedule, lr=optimizer_lr(cfg.optimizer), total_steps=budget, steps_per_epoch=spe)
            lr = join([pre, lr], [p])
        if self.constant_lr is not None:
            # only the pre-training part of the joined policy is ever reached (and named)
            lr = join([lr, constant(self.constant_lr)], [p]) if p else constant(self.constant_lr)
        return Policy(lr, CollectionPoints(period=c, start=p, offset=c // 2), total)

    def check(self, spe: int) -> None:
        """Raises ConfigError: ``a1 <= a2``, no room for cycles, or no cycle middle in the run."""
        if not self.policy(spe).marks:
            raise ConfigError(f"{self.name}: no cycle middle falls within {self.train.epochs} epochs; raise epochs or shorten the cycle")


@dataclass(frozen=True)
class RestartsSchedule:
    """Cosine annealing with warm restarts from the optimizer's ``lr`` to ``min_lr`` in cycles of
    ``cycles`` per run (or ``cycle_epochs``); collected at every cycle end (Huang et al. 2017).

    Args: ``name``, ``params`` (snapshot's hyperparameters), ``train``, as :class:`CyclicSchedule`.
    """

    name: str
    params: Any
    train: TrainConfig

    def cycle_steps(self, spe: int) -> int:
        total = self.train.total_steps(spe)
        if self.params.cycle_epochs is not None:
            return max(1, int(round(self.params.cycle_epochs * spe)))
        return max(1, total // self.params.cycles)

    def policy(self, spe: int) -> Policy:
        cycle = self.cycle_steps(spe)
        lr = cosine_restarts(optimizer_lr(self.train.optimizer), cycle, self.params.min_lr)
        return Policy(lr, CollectionPoints(period=cycle), self.train.total_steps(spe))

    def check(self, spe: int) -> None:
        """Raises ConfigError: fewer iterations than cycles, or a cycle longer than the run."""
        total, cycle, epochs = self.train.total_steps(spe), self.cycle_steps(spe), self.train.epochs
        if self.params.cycle_epochs is None and total // self.params.cycles < 1:
            raise ConfigError(f"{self.name}: cycles = {self.params.cycles} need at least one iteration each, and the run has {total} "
                              f"({epochs} epochs x {spe}); lower cycles or raise epochs")
        if cycle > total:
            raise ConfigError(f"{self.name}: a cycle of {cycle} iterations does not fit in the run's {total} iterations "
                              f"({epochs} epochs x {spe}); lower cycles / cycle_epochs or raise epochs")


def trajectory_start(name: str, factory: ModelFactory, seeds: Callable[[int], list[int]], *, init_from: str | None = None,
                     members: int = 1) -> tuple[Ensemble, dict[str, Any] | None]:
    """The first point of a trajectory, as ``(ensemble, warm_start)`` for the engine: ``members``
    fresh networks (``seeds(members)``), or the final weights and optimizer state of the run
    directory ``init_from`` written by ``ensemblekit train`` (its ``train`` stage).

    Raises:
        DataError: ``init_from`` is not such a run directory, or holds another architecture.
    """
    if init_from is None:
        return Ensemble.from_factory(factory, seeds=seeds(members)), None
    state = RunDir(init_from).load_checkpoint("train") if os.path.isdir(init_from) else None
    if state is None:
        raise DataError(f"{name}: init_from {init_from!r} is not a run directory with checkpoints/train.safetensors")
    found = next(iter(state["ensemble"].values())).shape[0]
    ensemble = Ensemble.from_factory(factory, seeds=seeds(found))
    ensemble.load_state_tensors(state["ensemble"])  # a shape mismatch means another architecture
    return ensemble, state


class TrajectoryMethod(Method):
    """A method that trains one trajectory (stage ``stage``) and makes its ensemble from what a
    collector kept along it.

    A subclass names its parts: :meth:`schedule` (a :class:`CyclicSchedule` or
    :class:`RestartsSchedule`), :meth:`collector` (the callback kept at the schedule's
    collection points) and :meth:`finish` (the ensemble made of it); :meth:`start` is the
    trajectory's first point (default: one fresh network, no warm start).
    """

    tasks = BOTH_TASKS  # classification and regression (a Gaussian head: docs/regression.md)

    stage: ClassVar[str] = "trajectory"

    # ------------------------------------------------------------------ the parts
    def schedule(self) -> CyclicSchedule | RestartsSchedule:
        raise NotImplementedError

    def collector(self, points: CollectionPoints) -> Callback:
        raise NotImplementedError

    def finish(self, trained: Ensemble, collector: Any, data: Data) -> Ensemble:
        raise NotImplementedError

    def start(self, factory: ModelFactory) -> tuple[Ensemble, dict[str, Any] | None]:
        return trajectory_start(self.name, factory, self.member_seeds)

    # ------------------------------------------------------------------ the Method surface
    def lr_policy(self, steps_per_epoch: int) -> tuple[Schedule, list[int]]:
        policy = self.schedule().policy(steps_per_epoch)
        return policy.lr, policy.marks

    def _check(self, data: Data, factory: ModelFactory) -> None:
        self.schedule().check(steps_per_epoch(data.train, self.train_config_.batch_size))

    def _trainable(self, factory: ModelFactory, data: Data) -> Ensemble:
        return Ensemble.from_factory(factory, members=1)

    def bn_pass_flops(self, data: Data, passes: int) -> float:
        """FLOPs of ``passes`` BatchNorm recomputations of the trained network(s) over the training
        split (forward passes; none without BatchNorm), estimated before training."""
        import torch

        from ..ensemble.bn import has_batchnorm
        from ..training.flops import inference_flops

        self.validate()
        with torch.random.fork_rng(devices=[]):
            model = self._trainable(self._factory(data), data)
        if model is None or not has_batchnorm(model):
            return 0.0
        return float(passes) * inference_flops(model, data.train.tensors()[0][:64]) * len(data.train)

    def _fit(self, data: Data, factory: ModelFactory, run: RunDir | None) -> None:
        policy = self.schedule().policy(steps_per_epoch(data.train, self.train_config_.batch_size))
        ensemble, warm = self.start(factory)
        collector = self.collector(policy.points)
        trained = self._train_stage(ensemble, data, run, self.stage, schedule=policy.lr, callbacks=[collector], warm_start=warm)
        if collector.count == 0:  # the schedule was checked to reach one: early stopping ended the run first
            spe = steps_per_epoch(data.train, self.train_config_.batch_size)
            first = policy.points.steps(self.train_config_.total_steps(spe))[:1]
            at = f" (epoch {first[0] / spe:.4g})" if first else ""
            raise ConfigError(f"{self.name}: early stopping ended the run after {len(self.history_)} epoch(s), before its first "
                              f"collection point{at}, so nothing was collected; raise "
                              "train.early_stopping.patience or drop early stopping")
        self.ensemble_ = self.finish(trained, collector, data)
