"""Variational hypernetwork ensembles (METHODS.md §7): one run, a family of models over lambda."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field

from ..data.dataset import Data
from ..models.registry import ModelFactory
from ..training.checkpoint import RunDir
from ..training.config import TrainConfig
from ..varhyper.family import family_kl, pruning_curve, train_hyper
from ..varhyper.settings import FamilySettings
from .base import Method, register_method

__all__ = ["VarHyper", "VarHyperParams"]


class VarHyperParams(FamilySettings):
    form: Literal["linear", "lowrank", "piecewise"] = "linear"
    prune: float = Field(0.0, ge=0, lt=1)


@register_method("varhyper")
class VarHyper(Method):
    """An ensemble of networks G(lambda_1..lambda_M) taken out of one variational hypernetwork.

    The hypernetwork (``form``: linear | lowrank | piecewise) maps the encoded complexity
    ``l = (ln lambda - ln lambda_min) / (ln lambda_max - ln lambda_min)`` to the mean and
    log-std of every weight and bias of the model (Linear/Conv layers only; BatchNorm is
    refused with a clear error). Each mini-batch it is trained on
    ``mean_{k=1..samples} [CE(f(x; w ~ q_{lambda_k})) + lambda_k KL(q_{lambda_k} || N(0, prior_std^2)) / N_train]``,
    ``lambda_k = 10^u``, ``u ~ U(log10_range)``. The members are the mean networks at
    ``lambdas``, optionally pruned (``prune``: share of each layer's weights with the
    lowest ``mu^2 / sigma^2`` set to zero). ``report`` writes accuracy and KL per lambda
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

    Example:
        >>> vh = ek.create_method("varhyper", model={"name": "mlp", "kwargs": {"hidden": [100]}},
        ...                       form="linear", epochs=100).fit(ek.load_dataset("digits"))
        >>> vh.ensemble_.predict_proba(data.test.x).shape   # (6, N, 10)

    Paper: Grebenkova, Bakhteev, Strijov, "Variational optimization of a deep learning
    model with complexity control" (MIPT 2020; seed 002); Graves 2011; Ha et al. 2016.
    """

    Params = VarHyperParams
    test_params = {"lambdas": [0.01, 1.0]}

    @classmethod
    def at_budget(cls, budget: int, train: TrainConfig, params: dict[str, Any] | None = None) -> dict[str, Any]:
        lo, hi = (params or {}).get("log10_range", (-3.0, 2.0))
        lambdas = [float(10**u) for u in (np.linspace(lo, hi, budget) if budget > 1 else [(lo + hi) / 2])]
        return {"samples": budget, "lambdas": lambdas}

    def _hyper_kwargs(self) -> dict[str, Any]:
        p = self.params_
        return {**p.hyper_kwargs(), "eval_lambdas": p.lambdas}

    def _fit(self, data: Data, factory: ModelFactory, run: RunDir | None) -> None:
        p = self.params_
        train = self.train_config_
        model, info = train_hyper(factory, data, train, form=p.form, seed=self.seed, run=run, resume=self.resume_,
                                  rank=p.rank, hidden=p.hidden, pivots=p.pivots, **self._hyper_kwargs())
        self.hyper_ = model.eval()
        self.history_.extend(info["history"])
        self.cost_[f"hyper_{p.form}"] = info["train_s"]
        if p.prune > 0:
            from ..varhyper.bayes import weight_names
            from ..varhyper.prune import prune_weights, snr_scores

            mu, ls = model.posterior(p.lambdas)
            weights = prune_weights(mu, snr_scores(mu, ls), p.prune, weight_names(model.template))
            self.ensemble_ = model.members(p.lambdas, weights=weights)
        else:
            self.ensemble_ = model.members(p.lambdas)

    def report(self, run: RunDir, data: Data) -> None:
        """``varhyper_family.json``: test accuracy and KL per lambda, accuracy vs pruned share."""
        from ..serialization import write_json
        from ..varhyper.prune import DEFAULT_FRACTIONS, as_table

        self._check_fitted()
        lambdas = self.params_.lambdas
        acc = pruning_curve(self.hyper_, lambdas, DEFAULT_FRACTIONS, data.test)
        write_json(run.file("varhyper_family.json"), {
            "lambdas": lambdas, "kl": family_kl(self.hyper_, lambdas).tolist(),
            "pruning": as_table(acc, lambdas, DEFAULT_FRACTIONS),
        })
