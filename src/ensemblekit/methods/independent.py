"""Independent deep ensembles (Lakshminarayanan et al. 2017): the baseline of every comparison."""

from __future__ import annotations

from typing import Any, Literal, Mapping

from pydantic import Field

from ..data.dataset import Data
from ..ensemble import Ensemble
from ..models.registry import ModelFactory
from ..training.checkpoint import RunDir
from ..schema import StrictModel
from ..training.config import TrainConfig
from .base import BOTH_TASKS, Method, register_method

__all__ = ["Independent"]


@register_method("independent")
class Independent(Method):
    """M members with different random initialisations, trained independently, probabilities averaged.

    All members train together in one vectorised pass (stacked parameters, ``vmap``);
    each has its own initialisation seed, and with ``data_order="per_member"`` or
    ``"bootstrap"`` (bagging) its own data order. Budget: M members of E epochs cost
    M*E epochs (docs/methods.md, independent).

    Args:
        members: M (>= 1; default 5).
        budget_by: how ``compare`` spends kB: ``members`` (default: k members) or ``epochs``
            (``members`` networks trained k times longer; with ``members: 1``, the single model).

    Example:
        >>> import ensemblekit as ek
        >>> data = ek.load_dataset("mnist1d")
        >>> ind = ek.create_method("independent", model="cnn1d", members=5, epochs=30,
        ...                        optimizer={"name": "adam", "lr": 0.01}).fit(data)
        >>> ind.ensemble_.predict_proba(data.test.x).shape
        torch.Size([5, 1000, 10])
    """

    tasks = BOTH_TASKS  # classification and regression (a Gaussian head: docs/regression.md)

    class Params(StrictModel):
        members: int = Field(5, ge=1)
        budget_by: Literal["members", "epochs"] = "members"

    @classmethod
    def size_reference(cls, params: Mapping[str, Any]) -> bool:
        """k members of E epochs (``budget_by: members``): the deep ensemble the DEE counts in."""
        return params.get("budget_by", "members") == "members"

    @classmethod
    def at_budget(cls, budget: int, train: TrainConfig, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """kB = k members of E epochs (``budget_by: members``, the deep ensemble) or the given
        members trained for k·E epochs (``budget_by: epochs``: one network given the whole budget)."""
        if (params or {}).get("budget_by") == "epochs":
            return {"epochs": budget * train.epochs}
        return {"members": budget}

    def _check(self, data: Data, factory: ModelFactory) -> None:
        from ..training.layout import per_member_hparams

        per_member_hparams(self.train_config_.optimizer, self.params_.members)  # one value per member

    def _trainable(self, factory: ModelFactory, data: Data) -> Ensemble:
        return Ensemble.from_factory(factory, members=self.params_.members)

    def _fit(self, data: Data, factory: ModelFactory, run: RunDir | None) -> None:
        seeds = self.member_seeds(self.params_.members)
        ensemble = Ensemble.from_factory(factory, seeds=seeds)
        self.ensemble_ = self._train_stage(ensemble, data, run, "train")
