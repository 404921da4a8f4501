"""MIMO: M inputs concatenated along channels, M output heads, one network.

Havasi, Jenatton, Fort, Liu, Snoek, Lakshminarayanan, Dai & Tran, "Training independent
subnetworks for robust prediction", ICLR 2021. The first layer reads M inputs stacked along
the channel axis (``M·C`` channels), the last layer has ``M·K`` outputs, read as M heads.
In training each head gets its own example (the engine's ``data_order: per_member`` gives
each member its own shuffling); with input repetition ρ an example goes to every head with
probability ρ, and batch repetition r repeats each mini-batch r times with the heads'
examples re-paired. At test time every head sees the same input, so one forward pass gives
the M members. With M = 1 it is the base model (tested).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..errors import ConfigError
from .shared import MemberNet, find_layers, register_transform

__all__ = ["MIMONet", "to_mimo"]


def _first_and_last(model: nn.Module) -> tuple[tuple[nn.Module, str, nn.Module], tuple[nn.Module, str, nn.Module]]:
    found = find_layers(model, (nn.Linear, nn.Conv1d, nn.Conv2d))
    if len(found) < 1 or type(found[-1][2]) is not nn.Linear:
        raise ConfigError(f"mimo needs a model whose first layer is a Linear/Conv1d/Conv2d and whose last is a Linear head; "
                          f"{type(model).__name__} has {[type(f[2]).__name__ for f in found] or 'none'}")
    return found[0], found[-1]


def _widen(layer: nn.Module, members: int, inputs: bool) -> nn.Module:
    """The layer with M times the input channels (first layer) or output features (the head)."""
    if isinstance(layer, nn.Linear):
        i, o = (layer.in_features * members, layer.out_features) if inputs else (layer.in_features, layer.out_features * members)
        return nn.Linear(i, o, bias=layer.bias is not None)
    kw = dict(kernel_size=layer.kernel_size, stride=layer.stride, padding=layer.padding, dilation=layer.dilation,
              groups=layer.groups, bias=layer.bias is not None, padding_mode=layer.padding_mode)
    return type(layer)(layer.in_channels * members, layer.out_channels, **kw)


class MIMONet(MemberNet):
    """The widened network; ``forward`` stacks M inputs along channels and splits the head into M."""

    def __init__(self, body: nn.Module, members: int, num_classes: int, input_repetition: float, batch_repetition: int) -> None:
        super().__init__(members)
        self.body = body
        self.num_classes = num_classes
        self.input_repetition = float(input_repetition)
        self.batch_repetition = int(batch_repetition)
        self.last_source: tuple[torch.Tensor, torch.Tensor] | None = None

    def _pairing(self, batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Which example each head gets: ``(member, index)`` into the per-member batch, each ``(M, r·B)``."""
        m = self.members
        src_m = torch.arange(m, device=device)[:, None].expand(m, batch)
        src_i = torch.arange(batch, device=device)[None].expand(m, batch)
        ms, is_ = [src_m], [src_i]
        for _ in range(self.batch_repetition - 1):  # more pairings of the same examples
            ms.append(src_m)
            is_.append(torch.stack([torch.randperm(batch, device=device) for _ in range(m)]))
        src_m, src_i = torch.cat(ms, 1).clone(), torch.cat(is_, 1).clone()
        if self.input_repetition > 0:
            same = torch.rand(src_m.shape[1], device=device) < self.input_repetition
            src_m[:, same], src_i[:, same] = src_m[0, same], src_i[0, same]
        return src_m, src_i

    def targets(self, y: torch.Tensor) -> torch.Tensor:
        """The labels of the examples the last training forward gave each head, ``(M, r·B)``."""
        if self.last_source is None or y.dim() != 2:
            return y
        src_m, src_i = self.last_source
        return y[src_m, src_i]

    def forward(self, x: torch.Tensor, per_member: bool = False) -> torch.Tensor:
        m = self.members
        if per_member:
            if self.training and (self.input_repetition > 0 or self.batch_repetition > 1):
                self.last_source = self._pairing(x.shape[1], x.device)
                x = x[self.last_source]
            else:
                self.last_source = None
            stacked = x  # (M, B, C, ...)
        else:
            self.last_source = None
            stacked = x.unsqueeze(0).expand(m, *x.shape)
        b = stacked.shape[1]
        joined = stacked.transpose(0, 1).reshape(b, m * stacked.shape[2], *stacked.shape[3:])  # channels member-major
        out = self.body(joined)
        return out.reshape(b, m, self.num_classes).transpose(0, 1)


@register_transform("mimo")
def to_mimo(model: nn.Module, members: int = 3, input_repetition: float = 0.0, batch_repetition: int = 1) -> MIMONet:
    """A copy of ``model`` with an M-times-wider first layer and M heads (new layers freshly initialised).

    Args:
        members: M (>= 1). input_repetition: ρ in [0, 1) (default 0). batch_repetition: r >= 1 (default 1).
    """
    if not isinstance(members, int) or members < 1:
        raise ConfigError(f"mimo members must be an integer >= 1, got {members!r}")
    if not 0.0 <= input_repetition < 1.0 or int(batch_repetition) < 1:
        raise ConfigError(f"mimo needs input_repetition in [0, 1) and batch_repetition >= 1, got {input_repetition}, {batch_repetition}")
    body = copy.deepcopy(model)
    (fp, fname, first), (lp, lname, last) = _first_and_last(body)
    if members > 1 and first is last:  # one layer: wider on both sides
        setattr(fp, fname, nn.Linear(first.in_features * members, first.out_features * members, bias=first.bias is not None))
    elif members > 1:
        setattr(fp, fname, _widen(first, members, inputs=True))
        setattr(lp, lname, _widen(last, members, inputs=False))
    return MIMONet(body, members, last.out_features, input_repetition, int(batch_repetition))
