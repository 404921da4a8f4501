"""BatchEnsemble: shared weights times rank-1 per-member factors.

Wen, Tran & Ba, "BatchEnsemble: An Alternative Approach to Efficient Ensemble and Lifelong
Learning", ICLR 2020. Every linear and convolutional layer of the model keeps one shared
weight ``W``; member m's weight is ``W ∘ (s_m r_mᵀ)``, computed without forming it as
``y = ((x ∘ r_m) W) ∘ s_m + b_m`` (for a convolution ``r_m`` scales the input channels and
``s_m`` the output channels). Members have their own biases. The batch is repeated once
per member (member-major: the M copies are one batch ``(M·B, ...)``, each layer views it as
``(M, B, ...)``), so one forward pass gives all members' logits. Other layers (BatchNorm,
pooling, activations) are shared and see the whole repeated batch.

Factor initialisation: ``random_sign`` (each entry ±1 with probability 1/2, the paper's
choice) or ``normal`` (``N(1, init_std²)``). With every factor 1 and the base bias, every
member is the base layer (tested).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .shared import RepeatedBatchNet, register_transform

__all__ = ["BELinear", "BEConv", "BatchEnsembleNet", "to_batch_ensemble"]

_CONVS = {nn.Conv1d: 1, nn.Conv2d: 2}


def _factors(members: int, n: int, init: str, std: float, generator: torch.Generator | None = None) -> torch.Tensor:
    if init == "random_sign":
        return torch.randint(0, 2, (members, n), generator=generator).float().mul_(2).sub_(1)
    if init == "normal":
        return 1.0 + std * torch.randn(members, n, generator=generator)
    raise ConfigError(f"batch_ensemble init must be 'random_sign' or 'normal', got {init!r}")


class _BELayer(nn.Module):
    member_params = ("r", "s", "bias")

    def __init__(self, members: int, in_n: int, out_n: int, base_bias: torch.Tensor | None, init: str, std: float, decay_factors: bool) -> None:
        super().__init__()
        self.members = members
        self.r = nn.Parameter(_factors(members, in_n, init, std))
        self.s = nn.Parameter(_factors(members, out_n, init, std))
        bias = base_bias.detach().clone() if base_bias is not None else torch.zeros(out_n)
        self.bias = nn.Parameter(bias.unsqueeze(0).repeat(members, 1))
        self.no_decay = () if decay_factors else ("r", "s")

    def _scale(self, x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
        # x: (M*B, F, *spatial) member-major; factor: (M, F)
        m = self.members
        shape = (m, x.shape[0] // m, *x.shape[1:])
        f = factor.reshape(m, 1, factor.shape[1], *([1] * (x.dim() - 2)))
        return (x.reshape(shape) * f).reshape(x.shape)

    def _finish(self, y: torch.Tensor) -> torch.Tensor:
        m = self.members
        shape = (m, y.shape[0] // m, *y.shape[1:])
        s = self.s.reshape(m, 1, self.s.shape[1], *([1] * (y.dim() - 2)))
        b = self.bias.reshape(m, 1, self.bias.shape[1], *([1] * (y.dim() - 2)))
        return (y.reshape(shape) * s + b).reshape(y.shape)


class BELinear(_BELayer):
    """A BatchEnsemble ``nn.Linear`` (inputs ``(M·B, in)`` member-major)."""

    def __init__(self, base: nn.Linear, members: int, init: str = "random_sign", std: float = 0.5, decay_factors: bool = True) -> None:
        super().__init__(members, base.in_features, base.out_features, base.bias, init, std, decay_factors)
        self.weight = nn.Parameter(base.weight.detach().clone(), requires_grad=base.weight.requires_grad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._finish(F.linear(self._scale(x, self.r), self.weight))


class BEConv(_BELayer):
    """A BatchEnsemble ``nn.Conv1d`` / ``nn.Conv2d`` (inputs ``(M·B, C, ...)`` member-major)."""

    def __init__(self, base: nn.Conv1d | nn.Conv2d, members: int, init: str = "random_sign", std: float = 0.5, decay_factors: bool = True) -> None:
        super().__init__(members, base.in_channels, base.out_channels, base.bias, init, std, decay_factors)
        conv = copy.deepcopy(base)
        conv.bias = None
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._finish(self.conv(self._scale(x, self.r)))


class BatchEnsembleNet(RepeatedBatchNet):
    """A model whose linear and convolutional layers are BatchEnsemble layers; the batch is repeated per member."""


@register_transform("batch_ensemble")
def to_batch_ensemble(model: nn.Module, members: int = 4, init: str = "random_sign", init_std: float = 0.5,
                      decay_factors: bool = True) -> BatchEnsembleNet:
    """Turn every ``Linear`` / ``Conv1d`` / ``Conv2d`` of a copy of ``model`` into its BatchEnsemble form.

    Args:
        model: any module built from standard layers (registered models included).
        members: M (>= 1). init: ``random_sign`` (default) or ``normal``; init_std: the
            normal's std (default 0.5). decay_factors: whether weight decay reaches the
            factors r, s (default True; the paper decays only the shared weights).

    Raises:
        ConfigError: a layer it cannot convert (a ``Conv3d``, a transposed convolution, a
            DropConnect-wrapped layer), named; or a model without any linear/conv layer.
    """
    if not isinstance(members, int) or members < 1:
        raise ConfigError(f"batch_ensemble members must be an integer >= 1, got {members!r}")
    body = copy.deepcopy(model)
    converted = [0]

    def visit(parent: nn.Module, prefix: str) -> None:
        for name, child in parent.named_children():
            path = f"{prefix}{name}"
            if type(child) is nn.Linear:
                setattr(parent, name, BELinear(child, members, init, init_std, decay_factors))
                converted[0] += 1
            elif type(child) in _CONVS:
                setattr(parent, name, BEConv(child, members, init, init_std, decay_factors))
                converted[0] += 1
            elif isinstance(child, (nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear, nn.Conv1d, nn.Conv2d)):
                raise ConfigError(f"batch_ensemble cannot convert layer {path!r} ({type(child).__name__}); "
                                  "it converts nn.Linear, nn.Conv1d and nn.Conv2d")
            elif type(child).__name__ == "DropConnect":
                raise ConfigError(f"batch_ensemble cannot convert the DropConnect layer {path!r}; drop the dropconnect wrapper")
            else:
                visit(child, path + ".")

    visit(body, "")
    if not converted[0]:
        raise ConfigError(f"batch_ensemble found no nn.Linear / nn.Conv1d / nn.Conv2d layer in {type(model).__name__}")
    return BatchEnsembleNet(body, members)
