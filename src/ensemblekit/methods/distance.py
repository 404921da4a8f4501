"""Distance-aware single networks as methods: SNGP (and an ensemble of SNGPs) and DDU.

Both spectrally normalise the hidden layers so that distances between inputs survive into the
features (:mod:`ensemblekit.distance.spectral`); SNGP ends in a random-feature Gaussian-process
layer whose covariance is fitted after training (:mod:`ensemblekit.distance.gp`), DDU keeps its
softmax head and fits a class-conditional Gaussian density to the features
(:mod:`ensemblekit.distance.ddu`), whose density is its OOD score. Liu et al., "Simple and
Principled Uncertainty Estimation with Deterministic Deep Learning via Distance Awareness",
NeurIPS 2020; Mukhoti et al., "Deep Deterministic Uncertainty: A New Simple Baseline", CVPR 2023;
docs/methods.md (sngp, ddu).
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import Field

from ..data.dataset import Data
from ..ensemble import Ensemble
from ..errors import ConfigError
from ..models.registry import ModelFactory
from .base import register_method, with_wrapper
from .posthoc import PostHocMethod, PostHocParams

__all__ = ["SNGP", "SNGPEnsemble", "DDU", "SNGPParams", "DDUParams"]


class SpectralParams(PostHocParams):
    coeff: float = Field(0.95, gt=0)  # the bound on each hidden layer's spectral norm
    power_iterations: int = Field(1, ge=1)


class SNGPParams(SpectralParams):
    features: int = Field(1024, ge=1)  # random Fourier features of the GP layer
    lengthscale: float = Field(10.0, gt=0)  # of the RBF kernel on the penultimate features (docs/methods.md, sngp)
    ridge: float = Field(1.0, gt=0)  # the GP precision's prior term
    mean_field: float = Field(math.pi / 8, ge=0)  # lambda of the mean-field logits f / sqrt(1 + lambda var)


class SNGPEnsembleParams(SNGPParams):
    members: int = Field(5, ge=1)


class DDUParams(SpectralParams):
    coeff: float = Field(3.0, gt=0)  # Mukhoti et al.'s bound (with residual connections)


class _Spectral(PostHocMethod):
    """Shared: the ``spectral_norm`` wrapper on the model; a run given by ``from_run`` must already be spectrally normalised."""

    def _spectral_model(self) -> Any:
        p = self.params_
        return with_wrapper(self.model, "spectral_norm", {"coeff": p.coeff, "power_iterations": p.power_iterations})

    def _model(self) -> Any:
        return self._spectral_model()

    def _check(self, data: Data, factory: ModelFactory) -> None:
        if self.params_.from_run is not None:
            raise ConfigError(f"{self.name}: from_run is for post-hoc fits of ordinary networks (laplace); {self.name} trains its "
                              "own spectrally normalised network")


class _SNGPBase(_Spectral):
    stage = "gp_covariance"

    def _model(self) -> Any:
        p = self.params_
        return with_wrapper(self._spectral_model(), "gp_head", {"features": p.features, "lengthscale": p.lengthscale,
                                                                  "ridge": p.ridge, "mean_field": p.mean_field})

    def posthoc(self, ensemble: Ensemble, data: Data) -> Ensemble:
        from ..distance.gp import fit_gp_covariance

        fit_gp_covariance(ensemble, data.train, batch_size=max(self.train_config_.batch_size, 256))
        return ensemble


@register_method("sngp")
class SNGP(_SNGPBase):
    """One spectrally normalised network ending in a random-feature Gaussian process (SNGP).

    The model's hidden Linear and convolution layers get ``W·min(1, coeff/σ(W))`` (spectral
    normalisation with a bound, ``power_iterations`` per step); its last Linear layer becomes
    ``features`` random Fourier features of an RBF kernel (``lengthscale``) and a trained output
    layer. After training, one pass over the training split fits the GP's posterior covariance
    (precision ``ridge·I + Σ φφᵀ``); at test time each logit is divided by √(1 + mean_field·v),
    v the example's GP variance. The result is an ordinary stacked ensemble (save, export,
    predict as usual).

    Budget: kB = one run of k·E epochs; the covariance pass is the stage ``gp_covariance``.

    Paper: Liu et al., "Simple and Principled Uncertainty Estimation with Deterministic Deep
    Learning via Distance Awareness", NeurIPS 2020; docs/methods.md (sngp).
    """

    Params = SNGPParams
    single = True
    knobs = {"lengthscale": {"type": "float", "low": 2.0, "high": 40.0, "log": True},
             "coeff": {"type": "float", "low": 0.5, "high": 3.0}}
    test_params = {"features": 64}


@register_method("sngp_ensemble")
class SNGPEnsemble(_SNGPBase):
    """``members`` SNGP networks trained independently, their mean-field predictives pooled.

    Budget: kB = k members of E epochs (as ``independent``).

    Paper: Liu et al., NeurIPS 2020 (SNGP ensembles, their Section 5); docs/methods.md (sngp).
    """

    Params = SNGPEnsembleParams
    single = False
    knobs = SNGP.knobs
    test_params = {"features": 64, "members": 2}


@register_method("ddu")
class DDU(_Spectral):
    """Deep Deterministic Uncertainty: a spectrally normalised softmax network and a Gaussian density of its features.

    The hidden layers are spectrally normalised as in :class:`SNGP` (``coeff``, default 3 as
    in Mukhoti et al.); after training one pass over the training split fits one Gaussian per
    class to the features (the inputs of the last layer; Gaussian discriminant analysis). The
    softmax gives the predictions and the aleatoric scores (MSP, entropy); minus the features'
    log-density is the epistemic score ``density`` in every OOD and selective table.

    Budget: kB = one run of k·E epochs; the density fit is the stage ``gda_fit``.

    Paper: Mukhoti et al., "Deep Deterministic Uncertainty: A New Simple Baseline", CVPR 2023;
    docs/methods.md (ddu).
    """

    Params = DDUParams
    single = True
    stage = "gda_fit"
    knobs = {"coeff": {"type": "float", "low": 1.0, "high": 6.0}}

    def posthoc(self, ensemble: Ensemble, data: Data) -> Any:
        from ..distance.ddu import fit_ddu

        return fit_ddu(ensemble, data.train, batch_size=max(self.train_config_.batch_size, 256))
