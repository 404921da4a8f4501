"""MC-dropout as a method: one network trained with dropout; M stochastic passes predict.

Gal & Ghahramani, ICML 2016 (:mod:`ensemblekit.efficient.mcdropout`); docs/methods.md (mc_dropout).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from ..data.dataset import Data
from ..efficient.mcdropout import MCDropout as MCDropoutPredictor
from ..ensemble import Ensemble
from ..models.registry import ModelFactory
from ..seeding import derive_seed
from ..training.checkpoint import RunDir
from ..schema import StrictModel
from .base import register_method, with_wrapper
from .one_network import OneNetworkMethod

__all__ = ["MCDropoutMethod"]


@register_method("mc_dropout")
class MCDropoutMethod(OneNetworkMethod):
    """One network with dropout, kept on at test time: ``members`` passes are the members.

    ``p > 0`` adds ``Dropout(p)`` before the head (the ``head_dropout`` wrapper); ``p = 0`` uses
    the model's own dropout (``model: {name: mlp, kwargs: {dropout: 0.2}}``), and a model
    with none is refused. Pass m draws its masks under ``manual_seed(derive_seed(seed,
    "mc") + m)``, so the members are fixed.

    Budget: kB = one run of k·E epochs of one network.

    Args:
        members: M passes (>= 1; default 10). p: dropout before the head (default 0.1).

    Paper: Gal & Ghahramani, "Dropout as a Bayesian Approximation", ICML 2016; docs/methods.md (mc_dropout).
    """

    knobs = {"p": {"type": "float", "low": 0.05, "high": 0.5}}
    class Params(StrictModel):
        members: int = Field(10, ge=1)
        p: float = Field(0.1, ge=0, lt=1)

    test_params = {"members": 3}

    def _model(self) -> Any:
        p = float(self.params.get("p", 0.1))
        return with_wrapper(self.model, "head_dropout", p) if p > 0 else self.model

    def _check(self, data: Data, factory: ModelFactory) -> None:
        MCDropoutPredictor(Ensemble.from_factory(factory, seeds=[0]), self.params_.members)  # a model without dropout is refused

    def _trainable(self, factory: ModelFactory, data: Data) -> Ensemble:
        return Ensemble.from_factory(factory, members=1)

    def _fit(self, data: Data, factory: ModelFactory, run: RunDir | None) -> None:
        network = self._train_stage(Ensemble.from_factory(factory, seeds=self.member_seeds(1)), data, run, "train")
        self.ensemble_ = MCDropoutPredictor(network, self.params_.members, derive_seed(self.seed, "mc"))
