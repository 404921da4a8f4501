"""The probit-adjusted final layer: a network's head that outputs the linearised Laplace predictive.

For classification the GLM predictive ``∫ softmax(f) N(f; f̂, diag v) df`` (Immer, Korzepa &
Bauer, "Improving predictions of Bayesian neural nets via local linearization", AISTATS 2021;
for the last layer the linearisation is exact) is approximated by MacKay's probit
approximation (MacKay, "The Evidence Framework Applied to Classification Networks", Neural
Computation 1992), as in Daxberger et al., "Laplace Redux — Effortless Bayesian Deep
Learning", NeurIPS 2021: ``softmax(f̂_k / sqrt(1 + π v_k / 8))``, with ``v_k`` the posterior
variance of the logit ``k`` (the diagonal of the function covariance; the mean-field form).

For regression the predictive of output ``k`` is Gaussian with the network's own variance
plus the epistemic one, ``σ²_k + v_k``; the head keeps the D means and replaces the raw
variances by ``raw' = softplus^{-1}(softplus(raw) + v)``, so that the readout's
``softplus(raw') + min_var`` is ``σ² + v`` (:mod:`ensemblekit.metrics.head_outputs`).

:class:`ProbitLinear` holds the trained linear layer and the factors of ``v``
(:func:`ensemblekit.laplace.posterior.function_variance_from`) as buffers, so a member with it
in place of its final layer computes the adjusted outputs in its own forward: the predictor's
inference logits and the exported graph are the same module.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .curvature import with_bias
from .posterior import function_variance_from

__all__ = ["inverse_softplus", "probit_adjust", "ProbitLinear"]


def inverse_softplus(y: torch.Tensor) -> torch.Tensor:
    """``softplus^{-1}(y) = y + log(1 − e^{−y})`` (``y`` clamped to the dtype's smallest normal number),
    stable for small and large ``y``."""
    y = y.clamp_min(torch.finfo(y.dtype).tiny)
    return y + torch.log(-torch.expm1(-y))


def probit_adjust(z: torch.Tensor, v: torch.Tensor, regression_outputs: int = 0) -> torch.Tensor:
    """The adjusted outputs from a head's raw outputs ``z`` ``(..., K)`` and the variances ``v`` ``(..., K')``.

    Classification (``regression_outputs = 0``): ``z / sqrt(1 + π v / 8)``. Regression with D
    outputs (``z`` ``(..., 2D)``, ``v`` ``(..., D)``): the means, then ``softplus^{-1}(softplus(raw) + v)``.
    """
    v = v.to(z.dtype).clamp_min(0.0)
    if not regression_outputs:
        return z * torch.rsqrt(1.0 + (math.pi / 8.0) * v)
    d = regression_outputs
    raw = inverse_softplus(F.softplus(z[..., d:]) + v)
    return torch.cat([z[..., :d], raw], dim=-1)


class ProbitLinear(nn.Module):
    """A final linear layer whose outputs are the probit-adjusted logits (or regression outputs with ``σ² + v``).

    Args:
        linear: the trained ``nn.Linear`` (kept as is).
        basis: ``U`` ``(K, q, q)`` or ``(1, q, q)``, or ``None`` (the identity: a diagonal posterior).
        weights: ``w`` ``(K, q)``; ``v_k = Σ_r w_kr (φ̃ᵀ U_k[:, r])²``.
        regression_outputs: D for a regression head of width 2D, 0 for a classifier.

    Example:
        >>> head = ProbitLinear(nn.Linear(3, 2), None, torch.zeros(2, 4))
        >>> head(torch.randn(5, 3)).shape   # v = 0: the plain logits
        torch.Size([5, 2])
    """

    def __init__(self, linear: nn.Linear, basis: torch.Tensor | None, weights: torch.Tensor, regression_outputs: int = 0) -> None:
        super().__init__()
        self.linear = linear
        dtype = linear.weight.dtype
        self.register_buffer("basis", None if basis is None else basis.to(linear.weight.device, dtype).contiguous())
        self.register_buffer("weights", weights.to(linear.weight.device, dtype).contiguous())
        self.has_bias = linear.bias is not None
        self.regression_outputs = int(regression_outputs)

    def variance(self, phi: torch.Tensor) -> torch.Tensor:
        """``v`` ``(..., K)`` at the layer's inputs ``φ`` ``(..., d)``."""
        return function_variance_from(with_bias(phi, self.has_bias, self.weights.dtype), self.basis, self.weights)

    def forward(self, phi: torch.Tensor) -> torch.Tensor:
        return probit_adjust(self.linear(phi), self.variance(phi), self.regression_outputs)

    def extra_repr(self) -> str:
        kind = f"regression D={self.regression_outputs}" if self.regression_outputs else "classification"
        return f"{kind}, basis={'identity' if self.basis is None else tuple(self.basis.shape)}"
