"""SWAG and MultiSWAG: samples from a Gaussian fitted to the SWA trajectory.

Maddox et al., NeurIPS 2019; Wilson & Izmailov, NeurIPS 2020 (:mod:`ensemblekit.efficient.swag`);
docs/methods.md (swag).
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from ..data.batching import steps_per_epoch
from ..data.dataset import Data
from ..efficient.swag import SWAGCollector, swag_samples
from ..ensemble import Ensemble
from ..errors import ConfigError
from ..models.registry import ModelFactory
from ..seeding import derive_seed
from ..ensemble.bn import recompute_bn
from ..training.checkpoint import RunDir
from ..training.config import TrainConfig
from .base import register_method
from .collect import plot_policy
from .swa import SWAParams
from .trajectory import CollectionPoints, CyclicSchedule, TrajectoryMethod, cyclic_budget, trajectory_start

__all__ = ["SWAG", "SWAGParams"]


class SWAGParams(SWAParams):
    samples: int = Field(10, ge=1)
    rank: int = Field(20, ge=1)
    scale: float = Field(1.0, ge=0)  # multiplies the covariance; 1 is the paper's Gaussian
    runs: int = Field(1, ge=1)


@register_method("swag")
class SWAG(TrajectoryMethod):
    """Members sampled from SWAG's Gaussian over the weights, BatchNorm recomputed for each.

    The trajectory is SWA's (FGE's pre-training and cycles, or ``swa_lr``); at every
    collection step the running mean, mean of squares and the last ``rank`` deviations of
    the weights are kept; ``samples`` draws
    ``θ̄ + √scale·(Σ_diag^{1/2} z1 / √2 + D z2 / √(2(K−1)))`` per trajectory are the members
    (``scale`` multiplies the covariance; ``scale = 1`` is the paper's
    ``N(θ̄, (Σ_diag + D Dᵀ / (K − 1)) / 2)``, which its code draws with ``scale = 0.5`` and no ``1/√2``).
    ``runs`` > 1 is MultiSWAG: that many trajectories from independent initialisations,
    trained side by side, each contributing its samples.

    Budget: as SWA, kB = one run of k·E epochs (``runs`` trajectories cost ``runs`` times that).

    Args: those of :class:`~ensemblekit.methods.swa.SWA`, plus ``samples`` (per run, default
    10), ``rank`` (K, default 20), ``scale`` (default 1), ``runs`` (default 1).

    Parts: :class:`~ensemblekit.methods.trajectory.CyclicSchedule` (with ``constant_lr =
    swa_lr``) and :class:`~ensemblekit.efficient.swag.SWAGCollector` (the moments).

    Paper: Maddox et al., "A Simple Baseline for Bayesian Uncertainty in Deep Learning",
    NeurIPS 2019; Wilson & Izmailov, NeurIPS 2020 (MultiSWAG); docs/methods.md (swag).
    """

    Params = SWAGParams
    knobs = {"a1_factor": {"type": "float", "low": 0.5, "high": 4.0}, "pretrain": {"type": "float", "low": 0.4, "high": 0.8},
             "rank": {"type": "int", "low": 5, "high": 30}, "scale": {"type": "float", "low": 0.25, "high": 1.0}}
    stage = "swag"
    test_params = {"samples": 3, "runs": 2}

    @classmethod
    def at_budget(cls, budget: int, train: TrainConfig, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return cyclic_budget(budget, train)

    def schedule(self) -> CyclicSchedule:
        return CyclicSchedule(self.name, self.params_, self.train_config_, constant_lr=self.params_.swa_lr)

    def collector(self, points: CollectionPoints) -> SWAGCollector:
        return SWAGCollector(points, rank=self.params_.rank)

    def start(self, factory: ModelFactory) -> tuple[Ensemble, dict[str, Any] | None]:
        p = self.params_
        if p.init_from is not None and p.runs != 1:
            raise ConfigError("swag: init_from starts one trajectory; runs must be 1")
        return trajectory_start(self.name, factory, self.member_seeds, init_from=p.init_from, members=p.runs)

    def _trainable(self, factory: ModelFactory, data: Data) -> Ensemble:
        return Ensemble.from_factory(factory, members=self.params_.runs)

    def finish(self, trained: Ensemble, collector: SWAGCollector, data: Data) -> Ensemble:
        """``samples`` draws per trajectory, each a copy of ``trained`` with BatchNorm recomputed."""
        p = self.params_
        gen = torch.Generator().manual_seed(derive_seed(self.seed, "swag"))
        parts = []
        for i, draw in enumerate(swag_samples(collector, p.samples, p.scale, gen, trained.num_members)):
            part = trained.clone()
            with torch.no_grad():
                for name, t in part.state_tensors(buffers=False).items():
                    t.copy_(draw[name])
            part.members_info = [{**info, "sample": i, "run": r} for r, info in enumerate(part.members_info)]
            parts.append(part)
        samples = Ensemble.cat(parts)
        self.swag_ = collector
        return self._measured("samples_bn", lambda: recompute_bn(samples, data.train, batch_size=max(self.train_config_.batch_size, 256)))

    def pass_flops(self, data: Data) -> float:
        """``samples`` BatchNorm recomputations per trajectory: forward passes over the training split."""
        return self.bn_pass_flops(data, passes=self.params_.samples)

    def report(self, run: RunDir, data: Data) -> None:
        plot_policy(self, steps_per_epoch(data.train, self.train_config_.batch_size), run.file("lr_schedule.png"))
