"""Stochastic Weight Averaging (Izmailov et al. 2018): the average of the FGE trajectory, one network."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from ..data.batching import steps_per_epoch
from ..data.dataset import Data
from ..ensemble import Ensemble
from ..models.registry import ModelFactory
from ..ensemble.bn import recompute_bn
from ..training.checkpoint import RunDir
from ..training.config import TrainConfig
from .base import register_method
from .collect import Averager, plot_policy
from .fge import FGEParams
from .trajectory import CollectionPoints, CyclicSchedule, TrajectoryMethod, cyclic_budget, trajectory_start

__all__ = ["SWA"]


class SWAParams(FGEParams):
    swa_lr: float | None = Field(None, gt=0)


@register_method("swa")
class SWA(TrajectoryMethod):
    """The equal-weight average of the weights FGE would collect, plus a BatchNorm pass.

    The same trajectory as :class:`~ensemblekit.methods.fge.FGE` (pre-training, then cycles);
    the parameters at every cycle middle are averaged (``torch.optim.swa_utils``' SWA rule)
    instead of kept as members, and BatchNorm statistics are recomputed for the average with
    one pass over the training data. One network for the price of one run. With ``swa_lr``
    the averaging phase uses that constant rate instead of the cycles (averaging once per cycle).

    Args: those of :class:`~ensemblekit.methods.fge.FGE`, plus ``swa_lr``.

    Parts: :class:`~ensemblekit.methods.trajectory.CyclicSchedule` (with ``constant_lr =
    swa_lr``) and :class:`~ensemblekit.methods.collect.Averager`.

    Paper: Izmailov et al., "Averaging Weights Leads to Wider Optima and Better
    Generalization", UAI 2018; docs/methods.md (swa).
    """

    Params = SWAParams
    knobs = {"a1_factor": {"type": "float", "low": 0.5, "high": 4.0}, "pretrain": {"type": "float", "low": 0.4, "high": 0.8}}
    stage = "swa"

    @classmethod
    def at_budget(cls, budget: int, train: TrainConfig, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return cyclic_budget(budget, train)

    def schedule(self) -> CyclicSchedule:
        return CyclicSchedule(self.name, self.params_, self.train_config_, constant_lr=self.params_.swa_lr)

    def collector(self, points: CollectionPoints) -> Averager:
        return Averager(points)

    def start(self, factory: ModelFactory) -> tuple[Ensemble, dict[str, Any] | None]:
        return trajectory_start(self.name, factory, self.member_seeds, init_from=self.params_.init_from)

    def finish(self, trained: Ensemble, collector: Averager, data: Data) -> Ensemble:
        averaged = collector.apply(trained)
        averaged.members_info = [{**info, "averaged_iterates": collector.count} for info in averaged.members_info]
        return self._measured("swa_bn", lambda: recompute_bn(averaged, data.train, batch_size=max(self.train_config_.batch_size, 256)))

    def pass_flops(self, data: Data) -> float:
        """One BatchNorm recomputation of the averaged network: a forward pass over the training split."""
        return self.bn_pass_flops(data, passes=1)

    def report(self, run: RunDir, data: Data) -> None:
        plot_policy(self, steps_per_epoch(data.train, self.train_config_.batch_size), run.file("lr_schedule.png"))
