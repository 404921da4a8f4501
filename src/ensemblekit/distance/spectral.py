"""Spectral normalisation with a bound: ``W -> W * min(1, c / sigma(W))``.

Miyato et al., "Spectral Normalization for Generative Adversarial Networks", ICLR 2018,
divide a weight by a power-iteration estimate of its largest singular value. SNGP (Liu et
al., "Simple and Principled Uncertainty Estimation with Deterministic Deep Learning via
Distance Awareness", NeurIPS 2020) and DDU (Mukhoti et al., "Deep Deterministic
Uncertainty: A New Simple Baseline", CVPR 2023) only *bound* it: a weight whose norm is
below the coefficient ``c`` is left unchanged, a larger one is scaled down to norm ``c``.
With residual layers ``x + g(x)`` and ``Lip(g) < 1`` the map is bi-Lipschitz, so distances
between inputs survive in the features (Liu et al.'s argument, which asks ``c < 1``); in
practice larger bounds train better: the SNGP reference code uses ``c = 6`` for a
WRN-28-10 on CIFAR and ``0.95`` for BERT, DDU uses ``c = 3`` with residual networks.

:class:`SpectralBound` is a ``torch.nn.utils.parametrize`` parametrisation. The
power-iteration vector ``u`` is a buffer (so the stacked ensemble keeps one per member,
saves it and reloads it); in training mode every forward runs ``power_iterations`` steps
without gradient and writes ``u`` back in place, as ``torch.nn.utils.parametrizations.spectral_norm``
does; in eval mode ``sigma = ||W^T u||`` from the stored ``u`` (deterministic). That
estimate never exceeds the true norm, so the bound holds up to the power iteration's
convergence (tested to 1e-3). The in-place update works on every stacked path: under vmap
the buffer is a batched view of the stacked buffer and so is the new ``u``; in the member
loop it is a plain view; either way the update lands in the stacked storage (tested by
training a two-member ensemble).

A convolution's kernel ``(out, in, *k)`` is reshaped to ``(out, in * prod(k))`` as Miyato et
al. and torch's ``spectral_norm`` do: that bounds the reshaped kernel's norm, which is an
approximation of the convolution's operator norm, not the operator norm itself.

Model spec::

    {"name": "mlp", "spectral_norm": true}                                  # c = 0.95, 1 iteration
    {"name": "resnet", "spectral_norm": 3}                                  # c = 3 (DDU)
    {"name": "wrn", "spectral_norm": {"coeff": 6, "power_iterations": 1}}   # the SNGP CIFAR setting

The wrapper bounds every ``nn.Linear`` and ``nn.Conv1d/2d/3d`` of the hidden layers, not the
final linear head (:func:`~ensemblekit.models.gaussian_head.final_linear`: SNGP's output layer
is the GP, DDU's the softmax classifier, neither bounded). Normalisation layers
(BatchNorm, LayerNorm, GroupNorm, InstanceNorm) and parameter-free modules are left as they
are (DDU's own code also bounds BatchNorm's scale; here a BatchNorm can undo part of the
bound); any other layer that owns parameters cannot be converted and is named in one error.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from ..errors import ConfigError
from ..models.gaussian_head import final_linear
from ..models.registry import register_wrapper

__all__ = ["SpectralBound", "spectral_bound", "apply_spectral_norm", "check_spectral_norm", "DEFAULT_COEFF",
           "CONVERTED", "NORMALISATIONS"]

DEFAULT_COEFF = 0.95
"""The coefficient of ``spectral_norm: true``: below 1, the bound under which Liu et al.'s
residual layers are bi-Lipschitz (their CIFAR code uses 6, DDU uses 3: give the number)."""

WARMUP_ITERATIONS = 15
"""Power iterations run when ``u`` is first drawn (as torch's ``spectral_norm``), so the first estimate is close."""

CONVERTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
"""The layers whose weight gets the bound."""

NORMALISATIONS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.LayerNorm, nn.GroupNorm,
                  nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.RMSNorm, nn.LocalResponseNorm)
"""Layers left as they are (their parameters are not a linear map's weight)."""

_KEYS = ("coeff", "power_iterations")


class SpectralBound(nn.Module):
    """The parametrisation ``W -> W * min(1, coeff / sigma)``, ``sigma`` the power-iteration
    estimate of the largest singular value of ``W`` reshaped to ``(rows, -1)``.

    Register it with ``parametrize.register_parametrization(layer, "weight", SpectralBound(c))``
    (or :func:`spectral_bound`): registration runs it once, which draws ``u`` from torch's
    global generator and runs :data:`WARMUP_ITERATIONS` power iterations.

    Args:
        coeff: the bound ``c > 0``.
        power_iterations: iterations per training forward (>= 1; SNGP's reference uses 1).
        eps: the floor of the norms divided by.

    Example:
        >>> layer = spectral_bound(nn.Linear(8, 4), coeff=0.5)
        >>> bool(torch.linalg.matrix_norm(layer.weight, 2) <= 0.5 * 1.001)
        True
    """

    def __init__(self, coeff: float = DEFAULT_COEFF, power_iterations: int = 1, eps: float = 1e-12) -> None:
        super().__init__()
        self.coeff = _check_coeff(coeff)
        self.power_iterations = _check_iterations(power_iterations)
        self.eps = float(eps)
        self.register_buffer("u", torch.empty(0))

    def _power(self, mat: torch.Tensor, u: torch.Tensor, steps: int) -> torch.Tensor:
        for _ in range(steps):
            v = F.normalize(mat.t().mv(u), dim=0, eps=self.eps)
            u = F.normalize(mat.mv(v), dim=0, eps=self.eps)
        return u

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if weight.dim() < 2:
            raise ConfigError(f"SpectralBound needs a weight with 2 or more dimensions, got shape {tuple(weight.shape)}")
        mat = weight.reshape(weight.shape[0], -1)
        if self.u.numel() == 0:  # first call (the registration): draw u and converge it
            with torch.no_grad():
                u = F.normalize(torch.randn(mat.shape[0], device=mat.device, dtype=mat.dtype), dim=0, eps=self.eps)
                self.u = self._power(mat.detach(), u, WARMUP_ITERATIONS)
        elif self.training:
            with torch.no_grad():
                self.u.copy_(self._power(mat.detach(), self.u, self.power_iterations))
        u = self.u.clone(memory_format=torch.contiguous_format)  # the update above must not reach the graph
        sigma = torch.linalg.vector_norm(mat.t().mv(u))
        return weight * torch.clamp(self.coeff / sigma.clamp_min(self.eps), max=1.0)

    def sigma(self, weight: torch.Tensor) -> torch.Tensor:
        """The current estimate ``||W^T u||`` of the largest singular value (no update)."""
        return torch.linalg.vector_norm(weight.reshape(weight.shape[0], -1).t().mv(self.u))

    def extra_repr(self) -> str:
        return f"coeff={self.coeff}, power_iterations={self.power_iterations}"


def _check_coeff(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"spectral_norm coeff must be a number > 0, got {value!r}")
    return float(value)


def _check_iterations(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"spectral_norm power_iterations must be an integer >= 1, got {value!r}")
    return int(value)


def check_spectral_norm(value: Any) -> dict[str, Any] | None:
    """Validate ``spectral_norm: value`` of a model spec; the normalised, JSON-able value.

    Args:
        value: ``None``/``False``/``0`` (unwrapped), ``True`` or ``{}`` (``coeff``
            :data:`DEFAULT_COEFF`, one power iteration), a number ``c > 0`` (the coefficient),
            or ``{"coeff": c, "power_iterations": n}`` (either key optional).

    Returns:
        ``None`` or ``{"coeff": c, "power_iterations": n}``.

    Raises:
        ConfigError: any other value, naming the valid forms.

    Example:
        >>> check_spectral_norm(3)
        {'coeff': 3.0, 'power_iterations': 1}
    """
    if value is None or value is False or (isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0):
        return None
    if value is True:
        value = {}
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        value = {"coeff": value}
    if not isinstance(value, Mapping):
        raise ConfigError(f"spectral_norm must be true, a coefficient c > 0 or {{coeff: c, power_iterations: n}}, got {value!r}")
    unknown = [k for k in value if k not in _KEYS]
    if unknown:
        raise ConfigError(f"spectral_norm got unknown key {unknown[0]!r}; valid: {', '.join(_KEYS)}")
    return {"coeff": _check_coeff(value.get("coeff", DEFAULT_COEFF)),
            "power_iterations": _check_iterations(value.get("power_iterations", 1))}


def spectral_bound(layer: nn.Module, coeff: float = DEFAULT_COEFF, power_iterations: int = 1, name: str = "weight") -> nn.Module:
    """Register :class:`SpectralBound` on ``layer.<name>`` (in place) and return ``layer``;
    a layer already bounded is returned as it is."""
    if parametrize.is_parametrized(layer, name):
        if any(isinstance(p, SpectralBound) for p in layer.parametrizations[name]):
            return layer
    parametrize.register_parametrization(layer, name, SpectralBound(coeff, power_iterations))
    return layer


def _owns_parameters(module: nn.Module) -> bool:
    return any(True for _ in module.parameters(recurse=False))


@register_wrapper("spectral_norm", check=check_spectral_norm, order=6)
def apply_spectral_norm(model: nn.Module, value: Any = True) -> nn.Module:
    """Bound the spectral norm of every hidden Linear and Conv1d/2d/3d layer of ``model``, in place.

    The final linear layer (:func:`~ensemblekit.models.gaussian_head.final_linear`) is left
    unbounded; so are normalisation layers and parameter-free modules. The wrapper applies
    at order 6: after ``gaussian`` and ``packed`` (5), which change the head or the widths,
    and before ``gp_head`` (7), which replaces the head this wrapper leaves alone, and the
    ``frozen_head`` (10), ``head_dropout`` (15) and ``dropconnect`` (20) wrappers (a
    DropConnect then wraps the bounded layer and drops entries of the bounded weight).

    Args:
        model: any module; value: a ``spectral_norm`` spec value (:func:`check_spectral_norm`).

    Returns:
        ``model`` itself.

    Raises:
        ConfigError: a bad value, or layers that own parameters and are neither convertible
            nor normalisation layers (all of them named in one message).

    Example:
        >>> net = apply_spectral_norm(nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3)), 0.9)
        >>> [type(m).__name__ for m in net]
        ['ParametrizedLinear', 'ReLU', 'Linear']
    """
    spec = check_spectral_norm(value)
    if spec is None:
        return model
    found = final_linear(model)
    head = found[2] if found is not None else None
    convert, refused = [], []
    for name, module in model.named_modules():
        if module is head or isinstance(module, (NORMALISATIONS, parametrize.ParametrizationList)):
            continue
        if isinstance(module, CONVERTED):
            convert.append(module)
        elif _owns_parameters(module):
            refused.append(f"{name or '<model>'} ({type(module).__name__})")
    if refused:
        raise ConfigError(f"spectral_norm cannot convert: {', '.join(refused)}; it bounds Linear and Conv1d/2d/3d layers "
                          "(normalisation and parameter-free layers are left as they are)")
    for module in convert:
        spectral_bound(module, spec["coeff"], spec["power_iterations"])
    return model

