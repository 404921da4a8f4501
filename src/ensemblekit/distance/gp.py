"""SNGP's output layer: a Gaussian process with an RBF kernel, approximated by random features.

Liu et al., "Simple and Principled Uncertainty Estimation with Deterministic Deep Learning
via Distance Awareness", NeurIPS 2020 (SNGP) replace the last dense layer by a GP over the
penultimate features ``h``. The RBF kernel ``k(h, h') = exp(-||h - h'||^2 / (2 l^2))`` is
approximated with random Fourier features (Rahimi & Recht, "Random Features for
Large-Scale Kernel Machines", NeurIPS 2007): ``phi(h) = sqrt(2/D) cos(W h + b)`` with fixed
``W ~ N(0, 1/l^2)`` of shape ``(D, d)`` and ``b ~ U(0, 2 pi)``, so ``E[phi(h) . phi(h')] = k(h, h')``
(tested). The logits are ``f = beta^T phi(h)`` (plus a bias), ``beta`` trained as a plain
linear layer.

After training, the posterior of ``beta`` is the Laplace approximation with precision
``ridge * I + sum_n phi_n phi_n^T`` (:func:`fit_gp_covariance`): unit weights on every
example, as the SNGP reference implementation computes it by default (its Gaussian
likelihood), not the logistic weights ``p(1 - p)``. The predictive variance of an input is
``v = phi^T Sigma phi`` with ``Sigma`` the inverse precision, and in eval mode the layer
returns the mean-field adjusted logits ``f / sqrt(1 + lambda v)`` (``lambda = pi/8`` the
probit approximation Liu et al. use; ``0`` gives the plain logits). Far from the training
features ``phi`` is nearly orthogonal to every ``phi_n``, ``v`` is near its prior
``1/ridge`` and the logits shrink toward uniform probabilities.

The random features are buffers drawn from torch's global generator when the layer is
built, so the members of an ensemble (built under different seeds by
:meth:`~ensemblekit.ensemble.Ensemble.from_factory`) draw different ones and a saved
ensemble reloads them. ``Sigma`` starts at the prior ``I / ridge`` until
:func:`fit_gp_covariance` sets it from the training data. Liu et al.'s optional extras (a
layer normalisation or a random projection of ``h`` before the features) are not included.

Model spec (the final ``nn.Linear(d, C)`` becomes ``RandomFeatureGP(d, C)``)::

    {"name": "mlp", "spectral_norm": true, "gp_head": true}
    {"name": "resnet", "spectral_norm": 6, "gp_head": {"features": 1024, "lengthscale": 2.0, "ridge": 1.0, "mean_field": 0.3927}}
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch
from torch import nn

from ..data.dataset import Split
from ..errors import ConfigError
from ..models.gaussian_head import final_linear
from ..models.registry import register_wrapper
from .members import capture, iter_members

__all__ = ["RandomFourierFeatures", "RandomFeatureGP", "apply_gp_head", "check_gp_head", "fit_gp_covariance", "GP_DEFAULTS"]

GP_DEFAULTS: dict[str, Any] = {"features": 1024, "lengthscale": 1.0, "ridge": 1.0, "mean_field": math.pi / 8}
"""The ``gp_head: true`` settings: D = 1024 random features (Liu et al.'s choice), the RBF
length-scale 1 (features of a spectrally bounded network keep the inputs' scale), ridge 1
(the prior precision) and the probit mean-field factor pi/8."""


class RandomFourierFeatures(nn.Module):
    """``phi(h) = sqrt(2/D) cos(W h + b)``: ``W ~ N(0, 1/l^2)`` ``(D, d)`` and ``b ~ U(0, 2 pi)`` as buffers.

    Args:
        in_features: d. features: D. lengthscale: the RBF kernel's l (> 0).
    """

    def __init__(self, in_features: int, features: int = 1024, lengthscale: float = 1.0) -> None:
        super().__init__()
        self.in_features, self.features, self.lengthscale = int(in_features), int(features), float(lengthscale)
        self.register_buffer("weight", torch.randn(self.features, self.in_features) / self.lengthscale)
        self.register_buffer("bias", torch.rand(self.features) * (2 * math.pi))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return math.sqrt(2.0 / self.features) * torch.cos(nn.functional.linear(h, self.weight, self.bias))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, features={self.features}, lengthscale={self.lengthscale}"


class RandomFeatureGP(nn.Module):
    """A random-feature GP output layer: ``(B, d) -> (B, C)`` logits.

    Training mode: ``f = beta(phi(h))``. Eval mode: ``f / sqrt(1 + mean_field * v)``,
    ``v = phi^T Sigma phi`` per example (``Sigma``: the ``covariance`` buffer, ``(D, D)``).

    Args:
        in_features: d. num_classes: C. features: D (>= 1). lengthscale: the RBF l (> 0).
        ridge: the prior precision of ``beta`` (> 0); ``Sigma`` starts at ``I / ridge``.
        mean_field: lambda (>= 0). bias: ``beta`` has a bias.

    Example:
        >>> gp = RandomFeatureGP(16, 3, features=64).eval()
        >>> gp(torch.randn(5, 16)).shape
        torch.Size([5, 3])
    """

    def __init__(self, in_features: int, num_classes: int, features: int = 1024, lengthscale: float = 1.0,
                 ridge: float = 1.0, mean_field: float = math.pi / 8, bias: bool = True) -> None:
        super().__init__()
        opts = check_gp_head({"features": features, "lengthscale": lengthscale, "ridge": ridge, "mean_field": mean_field})
        self.ridge, self.mean_field = float(opts["ridge"]), float(opts["mean_field"])
        self.random_features = RandomFourierFeatures(in_features, opts["features"], opts["lengthscale"])
        self.beta = nn.Linear(opts["features"], int(num_classes), bias=bias)
        self.register_buffer("covariance", torch.eye(opts["features"]) / self.ridge)

    @property
    def in_features(self) -> int:
        return self.random_features.in_features

    @property
    def out_features(self) -> int:
        return self.beta.out_features

    def variance(self, phi: torch.Tensor) -> torch.Tensor:
        """``phi^T Sigma phi`` per row of the random features ``phi`` ``(B, D)`` -> ``(B,)``."""
        return ((phi @ self.covariance) * phi).sum(-1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        phi = self.random_features(h)
        logits = self.beta(phi)
        if self.training or self.mean_field == 0:
            return logits
        return logits / torch.sqrt(1.0 + self.mean_field * self.variance(phi)).unsqueeze(-1)

    def extra_repr(self) -> str:
        return f"ridge={self.ridge}, mean_field={self.mean_field}"


def _number(value: Any, key: str, low: float, strict: bool) -> float:
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and (value > low if strict else value >= low)
    if not ok:
        raise ConfigError(f"gp_head {key} must be a number {'>' if strict else '>='} {low:g}, got {value!r}")
    return float(value)


def check_gp_head(value: Any) -> dict[str, Any] | None:
    """Validate ``gp_head: value`` of a model spec; the normalised, JSON-able value.

    Args:
        value: ``None``/``False`` (unwrapped), ``True`` or ``{}`` (:data:`GP_DEFAULTS`), or
            ``{"features": D, "lengthscale": l, "ridge": r, "mean_field": lambda}`` (each optional).

    Returns:
        ``None`` or every key with its value.

    Raises:
        ConfigError: any other value (the valid keys and ranges named).

    Example:
        >>> check_gp_head({"features": 256})["features"]
        256
    """
    if value is None or value is False:
        return None
    if value is True:
        value = {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"gp_head must be true or {{features: D, lengthscale: l, ridge: r, mean_field: lambda}}, got {value!r}")
    unknown = [k for k in value if k not in GP_DEFAULTS]
    if unknown:
        raise ConfigError(f"gp_head got unknown key {unknown[0]!r}; valid: {', '.join(GP_DEFAULTS)}")
    opts = {**GP_DEFAULTS, **value}
    d = opts["features"]
    if isinstance(d, bool) or not isinstance(d, int) or d < 1:
        raise ConfigError(f"gp_head features must be an integer >= 1 (the number of random features D), got {d!r}")
    return {"features": int(d), "lengthscale": _number(opts["lengthscale"], "lengthscale", 0, True),
            "ridge": _number(opts["ridge"], "ridge", 0, True), "mean_field": _number(opts["mean_field"], "mean_field", 0, False)}


@register_wrapper("gp_head", check=check_gp_head, order=7)
def apply_gp_head(model: nn.Module, value: Any = True) -> nn.Module:
    """Replace the final linear layer ``Linear(d, C)`` of ``model`` by ``RandomFeatureGP(d, C)``, in place.

    Order 7: after ``spectral_norm`` (6), which leaves that layer unbounded, and before
    ``frozen_head`` (10), ``head_dropout`` (15) and ``dropconnect`` (20) (which then act on the
    GP's ``beta``, its last linear layer).

    Returns:
        ``model`` itself, or the new layer when ``model`` is itself the final layer.

    Raises:
        ConfigError: a bad value, or a model without a final ``nn.Linear``.
    """
    opts = check_gp_head(value)
    if opts is None:
        return model
    found = final_linear(model)
    if found is None:
        raise ConfigError(f"gp_head: model {type(model).__name__} has no final linear layer to replace by a Gaussian-process "
                          "layer (its last submodule, followed down, is not an nn.Linear); end the network with nn.Linear")
    parent, name, layer = found
    new = RandomFeatureGP(layer.in_features, layer.out_features, bias=layer.bias is not None, **opts)
    new = new.to(device=layer.weight.device, dtype=layer.weight.dtype)
    if parent is None:
        return new
    setattr(parent, name, new)
    return model


def _gp_heads(template: nn.Module) -> list[tuple[str, RandomFeatureGP]]:
    return [(name, m) for name, m in template.named_modules() if isinstance(m, RandomFeatureGP)]


@torch.no_grad()
def fit_gp_covariance(ensemble: Any, split: Split, batch_size: int = 512) -> Any:
    """Set every GP layer's ``Sigma = (ridge I + Phi^T Phi)^{-1}`` from one pass over ``split``.

    For every member of the stacked ``ensemble``, in eval mode, the random features ``Phi``
    ``(N, D)`` of each :class:`RandomFeatureGP` on the split are accumulated as ``Phi^T Phi``
    in float64, inverted by Cholesky, and written (float32) into that member's slice of the
    ensemble's stacked ``covariance`` buffer, so the ensemble's own logits, file and export use it.

    Args:
        ensemble: a stacked :class:`~ensemblekit.ensemble.Ensemble` with GP layers (``gp_head``).
        split: the training split. batch_size: examples per forward pass.

    Returns:
        ``ensemble`` (changed in place).

    Raises:
        ConfigError: no member has a GP layer.
    """
    if not any(_gp_heads(g.template) for g in ensemble.groups):
        raise ConfigError("fit_gp_covariance: the ensemble has no Gaussian-process layer (model spec key gp_head)")
    was = bool(getattr(ensemble, "training", False))
    ensemble.eval()
    try:
        for _, group, j in iter_members(ensemble):
            heads = _gp_heads(group.template)
            if not heads:
                continue
            precisions = _member_precisions(group, j, [m for _, m in heads], split, batch_size, ensemble.device)
            for (name, head), precision in zip(heads, precisions):
                key = f"{name}.covariance" if name else "covariance"
                cov = torch.cholesky_inverse(torch.linalg.cholesky(precision))
                group.buffers[key][j].copy_(cov.to(group.buffers[key].dtype))
    finally:
        ensemble.train(was)
    return ensemble


def _member_precisions(group: Any, j: int, heads: list[RandomFeatureGP], split: Split, batch_size: int,
                       device: torch.device) -> list[torch.Tensor]:
    """``ridge I + Phi^T Phi`` (float64) of member ``j``'s GP layers on ``split``."""
    acc = torch.device("cpu") if device.type == "mps" else device  # no float64 on MPS
    out = [torch.eye(h.random_features.features, dtype=torch.float64, device=acc) * h.ridge for h in heads]
    for xb, _ in split.batches(batch_size, device=device):
        phis = capture(group, j, xb, [h.random_features for h in heads], output=True)
        for k, phi in enumerate(phis):
            phi = phi.to(acc, torch.float64).reshape(-1, phi.shape[-1])
            out[k] += phi.t() @ phi
    return out
