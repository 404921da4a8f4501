"""Packed-Ensembles as a method: M narrower subnetworks packed into grouped layers.

Laurent et al., ICLR 2023 (:mod:`ensemblekit.efficient.packed`); docs/methods.md (packed).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from ..data.dataset import Data
from ..ensemble import Ensemble
from ..models.registry import ModelFactory
from ..training.checkpoint import RunDir
from ..schema import StrictModel
from .base import register_method, with_wrapper
from .one_network import OneNetworkMethod

__all__ = ["Packed"]


@register_method("packed")
class Packed(OneNetworkMethod):
    """M subnetworks of the model with every hidden width times ``alpha / M`` and convolutions in
    ``gamma`` groups, trained and run together as one network of grouped layers.

    The M subnetworks are stacked members, so every layer runs as one grouped convolution
    (``M·gamma`` groups) or one batched matrix product: the packed network. Each member has
    its own initialisation; the first layer of each reads the shared input, the last is its
    own head.

    Budget: kB = one run of k·E epochs (the packed network costs about ``alpha² / M`` of one
    model per epoch in its convolutions; the Training FLOPs column measures it).

    Args:
        members: M (>= 1; default 4). alpha: width factor (> 0; default 2). gamma: groups per
            member's convolution (>= 1; default 1). alpha·width / M must be a whole number
            for every hidden layer.

    Paper: Laurent et al., "Packed-Ensembles for Efficient Uncertainty Estimation", ICLR 2023;
    docs/methods.md (packed).
    """

    knobs = {"alpha": {"type": "float", "low": 1.0, "high": 4.0}, "gamma": {"type": "categorical", "choices": [1, 2]}}
    class Params(StrictModel):
        members: int = Field(4, ge=1)
        alpha: float = Field(2.0, gt=0)
        gamma: int = Field(1, ge=1)

    test_params = {"members": 2, "alpha": 1.0}

    def _model(self) -> Any:
        opts = {"alpha": float(self.params.get("alpha", 2.0)), "members": int(self.params.get("members", 4)), "gamma": int(self.params.get("gamma", 1))}
        return with_wrapper(self.model, "packed", opts)

    def _trainable(self, factory: ModelFactory, data: Data) -> Ensemble:
        return Ensemble.from_factory(factory, members=self.params_.members)

    def _fit(self, data: Data, factory: ModelFactory, run: RunDir | None) -> None:
        members = Ensemble.from_factory(factory, seeds=self.member_seeds(self.params_.members))
        self.ensemble_ = self._train_stage(members, data, run, "train")
