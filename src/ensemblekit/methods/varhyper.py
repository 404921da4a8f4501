"""Variational hypernetwork ensembles: one run, a family of models over the complexity lambda.

This module holds the family's shared surface (:class:`FamilyMethod`: members at chosen
lambdas, optional pruning, the accuracy-vs-pruned-share table in ``details``) and the
hypernetwork itself; the per-lambda baselines (separately trained variational nets, L2
nets) are in :mod:`ensemblekit.methods.variational`.

Paper: Grebenkova, Bakhteev & Strijov, "Variational optimization of a deep learning model
with complexity control" (MIPT, 2020); Graves, "Practical variational inference for neural
networks" (NeurIPS 2011); Ha, Dai & Le, "HyperNetworks" (2016). ``docs/methods.md``.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field

from ..data.dataset import Data
from ..ensemble import Ensemble
from ..models.registry import ModelFactory
from ..training.checkpoint import RunDir
from ..training.config import TrainConfig
from ..varhyper.family import family_kl, pruning_curve, train_hyper
from ..varhyper.prune import DEFAULT_FRACTIONS, as_table
from ..varhyper.settings import FamilySettings
from .base import Method, register_method

__all__ = ["FamilyMethod", "FamilyParams", "VarHyper", "VarHyperParams"]


class FamilyParams(FamilySettings):
    """A family's settings plus the share of each layer pruned from the members and the
    pruned shares at which ``details`` tabulates test accuracy."""

    prune: float = Field(0.0, ge=0, lt=1)
    fractions: list[float] = Field(default_factory=lambda: list(DEFAULT_FRACTIONS), min_length=1)


class FamilyMethod(Method):
    """Members taken out of a family of models indexed by lambda (one member per lambda).

    Subclasses train ``family_`` in ``_train_family`` and say what one epoch trains in
    ``_trainable``. By default the family has a Gaussian posterior per lambda (a
    :class:`~ensemblekit.varhyper.HyperModel`: its members are its mean networks, pruned by
    ``mu^2 / sigma^2``, and it has a KL term); a family of ordinary networks overrides
    :meth:`_members` and :meth:`_kl`. Budget: ``at_budget(B)`` uses B lambdas spread
    log-uniformly over ``log10_range`` (and ``samples = B`` for the hypernetwork: each step
    runs B networks).
    """

    Params = FamilyParams
    knobs = {"log10_range": {"type": "categorical", "choices": [[-3.0, 2.0], [-4.0, 0.0], [-5.0, -1.0], [-3.0, 0.0]]},
             "prior_std": {"type": "float", "low": 0.1, "high": 1.0, "log": True}, "init_log_sigma": {"type": "float", "low": -6.0, "high": -2.0}}
    test_params = {"lambdas": [0.01, 1.0]}

    @classmethod
    def at_budget(cls, budget: int, train: TrainConfig, params: dict[str, Any] | None = None) -> dict[str, Any]:
        lo, hi = (params or {}).get("log10_range", (-3.0, 2.0))
        lambdas = [float(10**u) for u in (np.linspace(lo, hi, budget) if budget > 1 else [(lo + hi) / 2])]
        return {"samples": budget, "lambdas": lambdas}

    @classmethod
    def family_runs(cls, lambdas: list[float]) -> str:
        """How a family over ``lambdas`` is trained, for the cost column of the family's tables
        (``ensemblekit varhyper``): one network per lambda here."""
        return f"{len(lambdas)} nets"

    def _hyper_kwargs(self) -> dict[str, Any]:
        return {**self.params_.hyper_kwargs(), "eval_lambdas": self.params_.lambdas}

    def _train_family(self, data: Data, factory: ModelFactory, run: RunDir | None) -> tuple[Any, dict[str, Any]]:
        raise NotImplementedError

    def _check(self, data: Data, factory: ModelFactory) -> None:
        from ..errors import ConfigError
        from ..varhyper.bayes import variational_shapes

        if self.train_config_.data_order != "shared":
            raise ConfigError(f"{self.name}: train.data_order must be 'shared' (every lambda sees the same mini-batch), "
                              f"got {self.train_config_.data_order!r}")
        variational_shapes(factory())  # Linear / Conv layers only: anything else is named here

    def _fit(self, data: Data, factory: ModelFactory, run: RunDir | None) -> None:
        family, info = self._train_family(data, factory, run)
        self._record_stage(info["stage"], info["cost"], info["history"])
        self.family_ = family.eval()
        self.ensemble_ = self.members(self.params_.lambdas, self.params_.prune)

    def members(self, lambdas: list[float], prune: float = 0.0) -> Ensemble:
        """The family's networks at ``lambdas`` (its own lambdas for a per-lambda family),
        each layer's lowest-scoring share ``prune`` of weights set to zero."""
        return self._members(self.family_, lambdas, prune)

    def _members(self, family: Any, lambdas: list[float], prune: float) -> Ensemble:
        """The mean networks of a posterior family at ``lambdas``, pruned by ``mu^2 / sigma^2``."""
        if not prune:
            return family.members(lambdas)
        from ..varhyper.bayes import weight_names
        from ..varhyper.prune import prune_weights, snr_scores

        mu, ls = family.posterior(lambdas)
        return family.members(lambdas, weights=prune_weights(mu, snr_scores(mu, ls), prune, weight_names(family.template)))

    def _kl(self, family: Any, lambdas: list[float]) -> list[float] | None:
        """``KL(q_lambda || p)`` per lambda (``None`` for a family without a posterior)."""
        return family_kl(family, lambdas).tolist()

    def details(self, data: Data) -> dict[str, Any]:
        """Test accuracy per lambda at every pruned share in ``fractions``, and KL(q_lambda || p)."""
        self._check_fitted()
        lambdas, fractions = self.params_.lambdas, self.params_.fractions
        acc = pruning_curve(self.family_, lambdas, fractions, data.test)
        kl = self._kl(self.family_, lambdas)
        return {"lambdas": lambdas, "fractions": fractions, "accuracy": acc.tolist(), "kl": kl,
                "pruning": as_table(acc, lambdas, fractions)}


class VarHyperParams(FamilyParams):
    form: Literal["linear", "lowrank", "piecewise"] = "linear"


@register_method("varhyper")
class VarHyper(FamilyMethod):
    """An ensemble of networks G(lambda_1..lambda_M) taken out of one variational hypernetwork.

    The hypernetwork (``form``: linear | lowrank | piecewise) maps the encoded complexity
    ``l = (ln lambda - ln lambda_min) / (ln lambda_max - ln lambda_min)`` to the mean and
    log-std of every weight and bias of the model (Linear/Conv layers only; BatchNorm is
    refused with a clear error). Each mini-batch it is trained on
    ``mean_{k=1..samples} [CE(f(x; w ~ q_{lambda_k})) + lambda_k KL(q_{lambda_k} || N(0, prior_std^2)) / N_train]``,
    ``lambda_k = 10^u``, ``u ~ U(log10_range)``. The members are the mean networks at
    ``lambdas``, optionally pruned (``prune``: share of each layer's weights with the
    lowest ``mu^2 / sigma^2`` set to zero). ``details`` gives accuracy and KL per lambda
    and the accuracy-vs-pruned-share table of the family.

    Budget: each step runs ``samples`` networks forward and backward, so E epochs cost
    about ``samples * E`` single-model epochs; ``at_budget(B)`` uses ``samples = B``
    lambdas per batch and B members spread log-uniformly over the range (the
    hypernetwork's own parameters are 2x (linear) to Kx (piecewise) a model's).

    Args:
        form: hypernetwork form (default linear). lambdas: the members' complexities
            (default 1e-3, 1e-2, ..., 1e2). log10_range: ``(L, R)`` (default (-3, 2)).
        samples: lambdas per mini-batch (>= 1; default 5). prior_std: prior std (> 0; 1.0).
        init_log_sigma: initial log-std (default -3). rank, hidden: low-rank form (1, 50).
        pivots: piecewise form (>= 2; default 6). prune: share pruned per layer ([0, 1); 0).
        weighting: ``none`` (default, the objective above) or ``balanced`` (each lambda's
            term divided by ``1 + lambda``, so that the largest lambdas do not dictate the
            shared parameters of the linear and low-rank forms).
        fractions: the pruned shares of the ``details`` table (default 0, 0.1, ..., 0.9).

    Example:
        >>> vh = ek.create_method("varhyper", model={"name": "mlp", "kwargs": {"hidden": [100]}},
        ...                       form="linear", epochs=100).fit(ek.load_dataset("digits"))
        >>> vh.ensemble_.predict_proba(data.test.x).shape   # (6, N, 10)
    """

    Params = VarHyperParams

    @classmethod
    def family_runs(cls, lambdas: list[float]) -> str:
        """One hypernetwork run covers every lambda."""
        return "one run, all lambdas"

    def _trainable(self, factory: ModelFactory, data: Data) -> Any:
        """Per epoch the hypernetwork trains ``samples`` networks: the hypernetwork itself."""
        from ..varhyper.forms import create_form
        from ..varhyper.model import HyperModel

        p = self.params_
        return HyperModel(factory(), create_form(p.form, rank=p.rank, hidden=p.hidden, pivots=p.pivots), **self._hyper_kwargs())

    def _train_family(self, data: Data, factory: ModelFactory, run: RunDir | None) -> tuple[Any, dict[str, Any]]:
        p = self.params_
        model, info = train_hyper(factory, data, self.train_config_, form=p.form, seed=self.seed, run=run, resume=self.resume_,
                                  rank=p.rank, hidden=p.hidden, pivots=p.pivots, callbacks=self.extra_callbacks_, **self._hyper_kwargs())
        self.hyper_ = model
        return model, info
