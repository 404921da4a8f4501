"""Masksembles as a method: fixed per-member channel masks in one shared network.

Durasov et al., CVPR 2021 (:mod:`ensemblekit.efficient.masksembles`); docs/methods.md (masksembles).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field

from ..data.dataset import Data
from ..efficient.masksembles import to_masksembles
from ..efficient.shared import SharedEnsemble
from ..models.registry import ModelFactory
from ..seeding import derive_seed
from ..training.checkpoint import RunDir
from ..training.config import StrictModel, TrainConfig
from .base import Method, register_method
from .batchensemble import single_run_budget

__all__ = ["Masksembles"]


@register_method("masksembles")
class Masksembles(Method):
    """M members sharing all weights, each seeing the features through its own fixed binary mask.

    The masks sit before the head (``where: head``) or after every hidden Linear/Conv as well
    (``where: all``); ``scale`` (>= 1) sets their overlap (1: identical, larger: less).
    The batch is repeated once per member.

    Budget: kB = one run of k·E epochs (each epoch costs about M single-model epochs).

    Args:
        members: M (>= 1; default 4). scale: >= 1 (default 2). where: ``head`` | ``all``.

    Paper: Durasov, Bagautdinov, Baque & Fua, "Masksembles for Uncertainty Estimation", CVPR
    2021; docs/methods.md (masksembles).
    """

    class Params(StrictModel):
        members: int = Field(4, ge=1)
        scale: float = Field(2.0, ge=1)
        where: Literal["head", "all"] = "head"

    test_params = {"members": 2, "scale": 1.5}

    @classmethod
    def at_budget(cls, budget: int, train: TrainConfig, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return single_run_budget(budget, train)

    def _options(self) -> dict[str, Any]:
        p = self.params_
        return {"members": p.members, "scale": p.scale, "where": p.where, "seed": derive_seed(self.seed, "masks")}

    def _check(self, data: Data, factory: ModelFactory) -> None:
        to_masksembles(factory(), **self._options())

    def _trainable(self, factory: ModelFactory, data: Data) -> SharedEnsemble:
        return SharedEnsemble(to_masksembles(factory(), **self._options()), "masksembles", self._options(), factory.spec)

    def _fit(self, data: Data, factory: ModelFactory, run: RunDir | None) -> None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.seed, "init"))
            net = to_masksembles(factory(), **self._options())
        model = SharedEnsemble(net, "masksembles", self._options(), factory.spec)
        self.ensemble_ = self._train_stage(model, data, run, "train")
