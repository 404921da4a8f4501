"""Laplace approximations as methods: one network, or every member of a deep ensemble, made Bayesian in its last layer.

The networks train as usual (or come from a finished run, ``from_run:``); then a Gaussian
posterior over each network's last layer is fitted around its trained weights
(:func:`ensemblekit.laplace.predictor.fit_laplace`). MacKay, "A Practical Bayesian Framework
for Backpropagation Networks", 1992; Kristiadi, Hein & Hennig, "Being Bayesian, Even Just a Bit,
Fixes Overconfidence in ReLU Networks", ICML 2020; Daxberger et al., "Laplace Redux — Effortless
Bayesian Deep Learning", NeurIPS 2021; Eschenhagen et al., "Mixtures of Laplace Approximations
for Improved Post-Hoc Uncertainty in Deep Learning", 2021 (the ensemble); docs/methods.md (laplace).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from ..data.dataset import Data
from ..ensemble import Ensemble
from ..errors import ConfigError
from ..models.registry import ModelFactory
from .base import BOTH_TASKS, register_method
from .posthoc import EnsembleParams, PostHocMethod, PostHocParams

__all__ = ["Laplace", "LaplaceEnsemble", "LaplaceParams"]


class LaplaceParams(PostHocParams):
    structure: Literal["full", "kfac", "diag"] = "kfac"
    prior: Literal["marglik", "val"] = "marglik"
    predictive: Literal["probit", "mc"] = "probit"
    samples: int = Field(10, ge=1)  # weight samples per network (predictive: mc)


class LaplaceEnsembleParams(LaplaceParams, EnsembleParams):
    pass


class _LaplaceFit(PostHocMethod):
    stage = "laplace_fit"
    pure_fit = True  # fit_laplace builds its posteriors beside the ensemble, which it leaves as it was
    tasks = BOTH_TASKS
    test_params = {"structure": "full"}

    def _check(self, data: Data, factory: ModelFactory) -> None:
        super()._check(data, factory)
        if self.params_.prior == "val" and data.val is None:
            raise ConfigError(f"{self.name}: prior: val chooses the prior precision on the validation split, and the data has none "
                              "(set the data's val_fraction > 0, or prior: marglik)")
        if data.is_regression and self.train_config_.loss == "mse":
            raise ConfigError(f"{self.name}: a regression Laplace approximation needs a head that learns its noise variance "
                              "(train.loss: gaussian_nll, the default), not a means-only head (train.loss: mse)")

    def posthoc(self, ensemble: Ensemble, data: Data) -> Any:
        from ..laplace.predictor import fit_laplace
        from ..seeding import derive_seed

        p = self.params_
        return fit_laplace(ensemble, data.train, structure=p.structure, prior=p.prior, val=data.val,
                           batch_size=max(self.train_config_.batch_size, 256), predictive=p.predictive,
                           samples=p.samples, seed=derive_seed(self.seed, "laplace"))


@register_method("laplace")
class Laplace(_LaplaceFit):
    """One network with a last-layer Laplace approximation (a Gaussian posterior around its trained weights).

    The network trains as ``independent`` with one member; the last layer's curvature (the
    generalised Gauss-Newton, ``structure``: ``full``, ``kfac`` or ``diag``) is accumulated in one
    pass over the training split, the prior precision chosen by the marginal likelihood
    (``prior: marglik``) or the validation NLL (``prior: val``). ``predictive: probit`` (default)
    gives each class logit f/√(1 + π v / 8), v its variance under the posterior (deterministic,
    exportable); ``predictive: mc`` draws ``samples`` last-layer weights, each a member (not
    exportable). Regression: the means' last layer, predictive variance σ² + v. ``from_run``: fit
    a finished run's network instead of training one.

    Budget: kB = one run of k·E epochs; the fit is the stage ``laplace_fit``.

    Paper: Daxberger et al., "Laplace Redux — Effortless Bayesian Deep Learning", NeurIPS 2021;
    Kristiadi, Hein & Hennig, ICML 2020; docs/methods.md (laplace).
    """

    Params = LaplaceParams
    single = True


@register_method("laplace_ensemble")
class LaplaceEnsemble(_LaplaceFit):
    """A deep ensemble whose every member gets its own last-layer Laplace approximation; the predictives are pooled.

    ``members`` networks train as ``independent`` ones; each is fitted as in :class:`Laplace`
    (the same ``structure``, ``prior``, ``predictive``); with ``predictive: mc`` each member
    contributes ``samples`` members. ``from_run``: fit a finished ensemble run's members.

    Budget: kB = k members of E epochs (as ``independent``); the fit is the stage ``laplace_fit``.

    Paper: Eschenhagen et al., "Mixtures of Laplace Approximations for Improved Post-Hoc
    Uncertainty in Deep Learning", 2021; docs/methods.md (laplace_ensemble).
    """

    Params = LaplaceEnsembleParams
    single = False
    test_params = {"structure": "kfac", "members": 2}
