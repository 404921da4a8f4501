"""The DARTS supernet: every edge of every cell is a mixed operation over the 7 DARTS ops.

The network is a stem convolution, ``layers`` cells (normal cells keep the size; a
reduction cell halves it and doubles the channels) and a linear classifier on globally
pooled features. It takes the architecture as an argument of ``forward``:
``weights = (op_weights (2, E, 7), input_weights (2, E))`` for the normal (index 0) and
the reduction (index 1) cell, so the same supernet serves DARTS (softmax weights),
EdgeNES's hypernetwork (Gumbel-softmax samples) and evaluation.

Paper: Liu, Simonyan & Yang, "DARTS", ICLR 2019; Xu et al., "PC-DARTS" (edge
normalisation), ICLR 2020.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..errors import ConfigError
from .genotype import num_edges
from .ops import OP_NAMES, FactorizedReduce, ReLUConvBN, layer_types, make_op

__all__ = ["MixedOp", "SearchCell", "SearchNetwork", "signal_layout", "reduction_positions"]


def signal_layout(input_shape: Sequence[int]) -> tuple[int, int]:
    """``(in_channels, dim)`` of an input shape: ``(F,)`` is read as a 1-channel signal,
    ``(C, L)`` as a 1-D signal, ``(C, H, W)`` as an image."""
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 1:
        return 1, 1
    if len(shape) in (2, 3):
        return shape[0], len(shape) - 1
    raise ConfigError(f"the DARTS space takes inputs of shape (F,), (C, L) or (C, H, W); got {shape}")


def reduction_positions(layers: int, reductions: Sequence[int] | None = None) -> list[int]:
    """Indices of the reduction cells: DARTS's ``layers // 3`` and ``2 * layers // 3`` for
    >= 3 cells, the last cell for 2, none for 1; or the given list."""
    if layers < 1:
        raise ConfigError(f"layers (cells) must be >= 1, got {layers}")
    if reductions is not None:
        out = sorted({int(r) for r in reductions})
        if any(not 0 <= r < layers for r in out):
            raise ConfigError(f"reductions must be cell indices in 0..{layers - 1}, got {list(reductions)}")
        return out
    if layers >= 3:
        return sorted({layers // 3, 2 * layers // 3})
    return [layers - 1] if layers == 2 else []


class MixedOp(nn.Module):
    """``sum_o w_o * op_o(x)`` over the 7 DARTS operations."""

    def __init__(self, channels: int, stride: int, dim: int) -> None:
        super().__init__()
        self.ops = nn.ModuleList([make_op(name, channels, stride, dim, affine=False, search=True) for name in OP_NAMES])

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        out = weights[0] * self.ops[0](x)
        for w, op in zip(weights[1:], self.ops[1:]):
            out = out + w * op(x)
        return out


class SearchCell(nn.Module):
    """A cell with every edge a :class:`MixedOp`; node ``i`` = ``sum_j u_ij * mixed_ij(h_j)``."""

    def __init__(self, nodes: int, c_prev_prev: int, c_prev: int, channels: int, reduction: bool, reduction_prev: bool, dim: int) -> None:
        super().__init__()
        self.nodes, self.reduction = nodes, reduction
        self.pre0 = FactorizedReduce(c_prev_prev, channels, dim, affine=False) if reduction_prev else ReLUConvBN(c_prev_prev, channels, 1, 1, 0, dim, affine=False)
        self.pre1 = ReLUConvBN(c_prev, channels, 1, 1, 0, dim, affine=False)
        self.edges = nn.ModuleList(
            MixedOp(channels, 2 if reduction and j < 2 else 1, dim) for i in range(nodes) for j in range(2 + i)
        )

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, op_weights: torch.Tensor, input_weights: torch.Tensor) -> torch.Tensor:
        states = [self.pre0(s0), self.pre1(s1)]
        e = 0
        for _ in range(self.nodes):
            node = sum(input_weights[e + j] * self.edges[e + j](h, op_weights[e + j]) for j, h in enumerate(states))
            e += len(states)
            states.append(node)
        return torch.cat(states[2:], dim=1)


class SearchNetwork(nn.Module):
    """The supernet of the DARTS space for 1-D signals or 2-D images.

    Args:
        input_shape: ``(F,)``, ``(C, L)`` or ``(C, H, W)``.
        num_classes: C.
        channels: channels of the first cells (default 8; doubles at each reduction).
        layers: cells (default 2 = one normal and one reduction cell).
        nodes: intermediate nodes per cell (default 4 -> 14 edges).
        stem_multiplier: the stem has ``stem_multiplier * channels`` channels (default 3).
        reductions: cell indices of the reduction cells (default: :func:`reduction_positions`).

    Example:
        >>> net = SearchNetwork((1, 40), 10, channels=4, layers=2)
        >>> w = (torch.full((2, 14, 7), 1 / 7), torch.full((2, 14), 0.25))
        >>> net(torch.zeros(3, 1, 40), w).shape
        torch.Size([3, 10])
    """

    def __init__(self, input_shape: Sequence[int], num_classes: int, channels: int = 8, layers: int = 2, nodes: int = 4,
                 stem_multiplier: int = 3, reductions: Sequence[int] | None = None) -> None:
        super().__init__()
        if channels < 2 or channels % 2:
            raise ConfigError(f"channels must be an even number >= 2, got {channels}")
        if nodes < 1:
            raise ConfigError(f"nodes must be >= 1, got {nodes}")
        in_channels, dim = signal_layout(input_shape)
        t = layer_types(dim)
        self.input_shape, self.dim, self.nodes = tuple(int(s) for s in input_shape), dim, nodes
        self.num_edges = num_edges(nodes)
        c_stem = stem_multiplier * channels
        self.stem = nn.Sequential(t["conv"](in_channels, c_stem, 3, padding=1, bias=False), t["bn"](c_stem))
        red = set(reduction_positions(layers, reductions))
        c_pp, c_p, c, reduction_prev = c_stem, c_stem, channels, False
        self.cells = nn.ModuleList()
        for k in range(layers):
            reduction = k in red
            c = c * 2 if reduction else c
            self.cells.append(SearchCell(nodes, c_pp, c_p, c, reduction, reduction_prev, dim))
            c_pp, c_p, reduction_prev = c_p, nodes * c, reduction
        self.pool = t["gap"](1)
        self.classifier = nn.Linear(c_p, num_classes)

    def forward(self, x: torch.Tensor, weights: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        op_w, in_w = weights
        if len(self.input_shape) == 1:
            x = x.unsqueeze(1)
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            t = 1 if cell.reduction else 0
            s0, s1 = s1, cell(s0, s1, op_w[t], in_w[t])
        return self.classifier(self.pool(s1).flatten(1))
