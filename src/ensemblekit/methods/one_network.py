"""Methods that train one network in one run, and those whose members live in it.

:class:`OneNetworkMethod` is the budget rule they share (kB = one run of k·E epochs);
:class:`SharedNetworkMethod` is the whole fit of BatchEnsemble, Masksembles and MIMO: a
registered transformation (:data:`ensemblekit.efficient.shared.TRANSFORMS`) turns the model
into a :class:`~ensemblekit.efficient.shared.MemberNet`, the engine trains it once as a
:class:`~ensemblekit.efficient.shared.SharedEnsemble`, and that is the ensemble.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar

import torch

from ..data.dataset import Data
from ..efficient.shared import MemberNet, SharedEnsemble
from ..models.registry import ModelFactory
from ..seeding import derive_seed
from ..training.checkpoint import RunDir
from ..training.config import TrainConfig
from .base import BOTH_TASKS, Method

__all__ = ["OneNetworkMethod", "SharedNetworkMethod", "single_run_budget"]


def single_run_budget(budget: int, train: TrainConfig) -> dict[str, Any]:
    """kB for a method that trains one network (however many members it holds): one run of k·E epochs."""
    return {"epochs": budget * train.epochs}


class OneNetworkMethod(Method):
    """A method that trains one network: budget kB is one run of k·E epochs."""

    tasks = BOTH_TASKS  # classification and regression (a Gaussian head: docs/regression.md)

    @classmethod
    def at_budget(cls, budget: int, train: TrainConfig, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return single_run_budget(budget, train)


class SharedNetworkMethod(OneNetworkMethod):
    """M members in one network made by a registered transformation of the model.

    Subclasses name the transformation (``transform``, its function ``_transform``) and
    the options it takes from their params (``_options``); the network is initialised
    under ``derive_seed(seed, "init")`` and trained in one stage, ``train``.
    """

    transform: ClassVar[str]
    _transform: ClassVar[Callable[..., MemberNet]]

    def _options(self) -> dict[str, Any]:
        raise NotImplementedError

    def _net(self, factory: ModelFactory) -> MemberNet:
        return type(self)._transform(factory(), **self._options())

    def _check(self, data: Data, factory: ModelFactory) -> None:
        self._net(factory)  # a layer the transformation cannot convert is named here

    def _trainable(self, factory: ModelFactory, data: Data) -> SharedEnsemble:
        return SharedEnsemble(self._net(factory), self.transform, self._options(), factory.spec)

    def _stage_config(self) -> TrainConfig:
        """The training config of the one stage (MIMO adjusts the data order)."""
        return self.train_config_

    def _fit(self, data: Data, factory: ModelFactory, run: RunDir | None) -> None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.seed, "init"))
            net = self._net(factory)
        model = SharedEnsemble(net, self.transform, self._options(), factory.spec)
        self.ensemble_ = self._train_stage(model, data, run, "train", config=self._stage_config())
