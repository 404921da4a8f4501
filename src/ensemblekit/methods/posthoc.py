"""Methods that train networks as usual (or take them from a finished run) and then fit something to them.

A Laplace approximation, SNGP's Gaussian-process covariance and DDU's feature density are all
fitted after training in a few passes over the training split. :class:`PostHocMethod` is what
they share: the members train like independent ones (one network given the whole budget, or
k members at kB, :attr:`PostHocMethod.single`), the fit runs as a measured stage (its seconds
and FLOPs are in the row's cost, beside training's), and with ``from_run:`` the networks of a
finished run are used instead of training (:func:`~ensemblekit.methods.from_run.load_trained_run`:
same task, same data, matching outputs, or one line before anything is written). A run's
training cost is then read from its ``results.json`` into the stage ``from_run``, so the
row's training FLOPs are the whole cost of what it predicts with.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

import torch
from pydantic import Field

from ..data.dataset import Data
from ..ensemble import Ensemble
from ..models.registry import ModelFactory
from ..schema import StrictModel
from ..serialization import read_json
from ..training.checkpoint import RunDir
from ..training.config import TrainConfig
from .base import Method
from .from_run import load_trained_run
from .one_network import single_run_budget

__all__ = ["PostHocMethod", "PostHocParams", "EnsembleParams", "STACKED"]

STACKED = ("ensemblekit.ensemble",)
"""The predictor kind a post-hoc fit takes from a run: a stacked ensemble of ordinary networks."""


class PostHocParams(StrictModel):
    from_run: str | None = None  # a finished run whose networks are fitted instead of training new ones


class EnsembleParams(PostHocParams):
    members: int = Field(5, ge=1)


class PostHocMethod(Method):
    """Networks trained as usual (or read from ``from_run``), then :meth:`posthoc` fitted to them in stage :attr:`stage`.

    Subclasses set ``stage`` (the fit's cost name), ``single`` (``True``: one network, kB = one run
    of k·E epochs; ``False``: ``members`` networks, kB = k members of E epochs) and implement
    :meth:`posthoc`.
    """

    stage: ClassVar[str] = "posthoc"
    single: ClassVar[bool] = True
    #: ``True``: :meth:`posthoc` changes nothing it reads (it returns a new predictor), so its seconds
    #: are timed without the FLOP counter (:meth:`~ensemblekit.methods.base.Method._measured`, ``pure``).
    pure_fit: ClassVar[bool] = False
    Params: ClassVar[type[StrictModel]] = PostHocParams
    run_inputs: ClassVar[tuple[str, ...]] = ("from_run",)

    @classmethod
    def at_budget(cls, budget: int, train: TrainConfig, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """kB: one network of k·E epochs (``single``) or k members of E epochs."""
        return single_run_budget(budget, train) if cls.single else {"members": budget}

    @classmethod
    def size_reference(cls, params: Any) -> bool:
        return False

    def _members(self) -> int:
        return 1 if self.single else int(getattr(self.params_, "members"))

    def posthoc(self, ensemble: Ensemble, data: Data) -> Any:
        """The predictor fitted to the trained ``ensemble`` on ``data`` (its training split; the validation split where asked)."""
        raise NotImplementedError

    def _check(self, data: Data, factory: ModelFactory) -> None:
        if self.params_.from_run is not None:
            load_trained_run(self.params_.from_run, data, self.name, kinds=STACKED)

    def _trainable(self, factory: ModelFactory, data: Data) -> Ensemble | None:
        return None if self.params_.from_run is not None else Ensemble.from_factory(factory, members=self._members())

    def pass_flops(self, data: Data) -> float:
        """One forward pass of the trained networks over the training split (the fit's features)."""
        from ..training.flops import inference_flops

        self.validate()
        with torch.random.fork_rng(devices=[]):
            model = self._trainable(self._factory(data), data)
        if model is None:
            return 0.0
        return float(inference_flops(model, data.train.tensors()[0][:64])) * len(data.train)

    def _trained(self, data: Data, factory: ModelFactory, run: RunDir | None) -> Ensemble:
        if self.params_.from_run is None:
            ensemble = Ensemble.from_factory(factory, seeds=self.member_seeds(self._members()))
            return self._train_stage(ensemble, data, run, "train")
        pred = load_trained_run(self.params_.from_run, data, self.name, kinds=STACKED)
        self._record_run_cost(self.params_.from_run)
        return pred

    def _record_run_cost(self, run_dir: str) -> None:
        """The run's own training seconds and FLOPs, as the stage ``from_run``."""
        path = os.path.join(run_dir, "results.json")
        row = read_json(path) if os.path.isfile(path) else {}
        cost = row.get("cost") or {}
        self.cost_["from_run"] = float(row.get("wall_s") or 0.0)
        self.flops_["from_run"] = cost.get("train_flops")

    def _fit(self, data: Data, factory: ModelFactory, run: RunDir | None) -> None:
        trained = self._trained(data, factory, run)
        if data.is_regression:
            from ..metrics.head_outputs import Readout

            trained.readout = Readout.for_data(data)  # the head in the (standardised) units it trained in
        self.ensemble_ = self._measured(self.stage, lambda: self.posthoc(trained, data), pure=self.pure_fit)
