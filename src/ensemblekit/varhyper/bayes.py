"""Mean-field Gaussian weights for a target network: supported layers, KL, sampling (docs/methods.md, varhyper).

The target network is any module whose parametrised layers are ``nn.Linear``,
``nn.Conv1d`` or ``nn.Conv2d`` (parameter-free layers such as ReLU, Flatten, pooling
and the zoo's ``Classifier`` wrapper are fine). Every weight and bias gets a mean and a
log-std; the network runs through ``torch.func.functional_call`` with sampled or mean
weights, so no layer is rewritten.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import ConfigError

__all__ = ["SUPPORTED_LAYERS", "variational_shapes", "weight_names", "kl_to_prior", "sample_weights"]

SUPPORTED_LAYERS: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d)


def variational_shapes(template: nn.Module) -> dict[str, torch.Size]:
    """Names and shapes of the parameters that become Gaussian (every weight and bias).

    Raises:
        ConfigError: a layer with parameters or buffers that is not Linear/Conv1d/Conv2d
            (e.g. BatchNorm), naming each one.
    """
    bad = []
    for name, mod in template.named_modules():
        own = [*mod.named_parameters(recurse=False), *mod.named_buffers(recurse=False)]
        if own and not isinstance(mod, SUPPORTED_LAYERS):
            bad.append(f"{name or '<root>'} ({type(mod).__name__})")
    if bad:
        raise ConfigError(
            "varhyper supports layers Linear, Conv1d, Conv2d (plus parameter-free layers); "
            f"unsupported: {', '.join(bad)} (for the zoo models set batchnorm: false)"
        )
    shapes = {k: v.shape for k, v in template.named_parameters()}
    if not shapes:
        raise ConfigError("varhyper: the target network has no parameters")
    return shapes


def weight_names(template: nn.Module) -> list[str]:
    """The ``.weight`` tensors of the supported layers (what pruning touches; biases never)."""
    return [f"{n}.weight" if n else "weight" for n, m in template.named_modules() if isinstance(m, SUPPORTED_LAYERS)]


def kl_to_prior(mu: torch.Tensor, log_sigma: torch.Tensor, prior_std: float = 1.0, dims: int = 0) -> torch.Tensor:
    """Closed-form ``KL(N(mu, sigma^2) || N(0, prior_std^2))`` summed over all but the first ``dims`` axes.

    ``KL = log(s_p / sigma) + (sigma^2 + mu^2) / (2 s_p^2) - 1/2`` per weight.

    Args:
        mu, log_sigma: same shape.
        prior_std: the prior's standard deviation ``s_p`` (> 0; default 1.0).
        dims: leading axes kept (1 for a ``(K, ...)`` stack of K posteriors).

    Returns:
        A tensor of shape ``mu.shape[:dims]``.
    """
    var_ratio = torch.exp(2.0 * log_sigma) / prior_std**2
    kl = 0.5 * (var_ratio + mu.pow(2) / prior_std**2 - 1.0) - log_sigma + math.log(prior_std)
    return kl.flatten(dims).sum(-1) if kl.dim() > dims else kl


def sample_weights(mu: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """One reparameterised sample ``mu + exp(log_sigma) * eps``, ``eps ~ N(0, I)``."""
    return mu + torch.exp(log_sigma) * torch.randn_like(mu)
