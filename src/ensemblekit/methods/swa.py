"""Stochastic Weight Averaging (Izmailov et al. 2018): the average of the FGE trajectory, one network."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from ..data.batching import steps_per_epoch
from ..data.dataset import Data
from ..models.registry import ModelFactory
from ..training.bn import recompute_bn
from ..training.callbacks import Callback
from ..training.checkpoint import RunDir
from ..training.config import TrainConfig
from ..training.schedules import Schedule, constant, join
from .base import register_method
from .collect import Averager
from .fge import FGE, FGEParams

__all__ = ["SWA"]


class SWAParams(FGEParams):
    swa_lr: float | None = Field(None, gt=0)


@register_method("swa")
class SWA(FGE):
    """The equal-weight average of the weights FGE would collect, plus a BatchNorm pass.

    The same trajectory as :class:`FGE` (pre-training, then cycles); the parameters at
    every cycle middle are averaged (``torch.optim.swa_utils``' SWA rule) instead of kept
    as members, and BatchNorm statistics are recomputed for the average with one pass
    over the training data. One network for the price of one run. With ``swa_lr`` the
    averaging phase uses that constant rate instead of the cycles (averaging once per cycle).

    Args: those of :class:`FGE`, plus ``swa_lr``.

    Paper: Izmailov et al., "Averaging Weights Leads to Wider Optima and Better
    Generalization", UAI 2018; docs/methods.md (swa).
    """

    Params = SWAParams
    stage = "swa"

    @classmethod
    def at_budget(cls, budget: int, train: TrainConfig, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return FGE.at_budget(budget, train, params)

    def lr_policy(self, steps_per_epoch: int) -> tuple[Schedule, list[int]]:
        policy, marks = super().lr_policy(steps_per_epoch)
        if self.params_.swa_lr is None:
            return policy, marks
        p = self.pretrain_steps(steps_per_epoch)
        pre = policy
        return (join([pre, constant(self.params_.swa_lr)], [p]) if p else constant(self.params_.swa_lr)), marks

    def collector(self, spe: int) -> Callback:
        c, p = self.cycle_steps(spe), self.pretrain_steps(spe)
        return Averager(lambda step: step > p and (step - p) % c == c // 2)

    def _fit(self, data: Data, factory: ModelFactory, run: RunDir | None) -> None:
        trained, averager = self._trajectory(data, factory, run)
        averaged = averager.apply(trained)  # type: ignore[attr-defined]
        averaged.members_info = [{**info, "averaged_iterates": averager.count} for info in averaged.members_info]  # type: ignore[attr-defined]
        self.ensemble_ = recompute_bn(averaged, data.train, batch_size=max(self.train_config_.batch_size, 256))

    def report(self, run: RunDir, data: Data) -> None:
        spe = steps_per_epoch(data.train, self.train_config_.batch_size)
        from .collect import plot_policy

        plot_policy(self, spe, run.file("lr_schedule.png"))
