"""A network built from a genotype (for retraining), registered as the ``darts`` model.

The genotype is a JSON-able keyword argument, so an :class:`~ensemblekit.ensemble.Ensemble`
of searched architectures saves and reloads from its spec without pickle:
``{"name": "darts", "kwargs": {"genotype": {...}, "channels": 16, "layers": 8}}``.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import nn

from ..errors import ConfigError
from ..models.base import Classifier
from ..models.registry import register_model
from .genotype import CELL_TYPES, DARTS_V2, Genotype
from .ops import FactorizedReduce, ReLUConvBN, layer_types, make_op
from .supernet import reduction_positions, signal_layout

__all__ = ["Cell", "DartsFeatures", "darts"]


class Cell(nn.Module):
    """A discrete cell: node ``i`` is the sum of the operations on its kept edges."""

    def __init__(self, nodes: Sequence[Sequence[tuple[str, int]]], c_prev_prev: int, c_prev: int, channels: int,
                 reduction: bool, reduction_prev: bool, dim: int) -> None:
        super().__init__()
        self.reduction = reduction
        self.pre0 = FactorizedReduce(c_prev_prev, channels, dim) if reduction_prev else ReLUConvBN(c_prev_prev, channels, 1, 1, 0, dim)
        self.pre1 = ReLUConvBN(c_prev, channels, 1, 1, 0, dim)
        self.inputs = [[j for _, j in node] for node in nodes]
        self.ops = nn.ModuleList(
            nn.ModuleList(make_op(op, channels, 2 if reduction and j < 2 else 1, dim) for op, j in node) for node in nodes
        )

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        states = [self.pre0(s0), self.pre1(s1)]
        for inputs, ops in zip(self.inputs, self.ops):
            states.append(sum(op(states[j]) for op, j in zip(ops, inputs)))
        return torch.cat(states[2:], dim=1)


class DartsFeatures(nn.Module):
    """Stem, cells, global average pooling: ``(B, *input_shape) -> (B, nodes * final channels)``."""

    def __init__(self, genotype: Genotype, input_shape: Sequence[int], channels: int, layers: int, stem_multiplier: int,
                 reductions: Sequence[int] | None) -> None:
        super().__init__()
        in_channels, dim = signal_layout(input_shape)
        t = layer_types(dim)
        self.flat_input = len(tuple(input_shape)) == 1
        c_stem = stem_multiplier * channels
        self.stem = nn.Sequential(t["conv"](in_channels, c_stem, 3, padding=1, bias=False), t["bn"](c_stem))
        red = set(reduction_positions(layers, reductions))
        c_pp, c_p, c, reduction_prev = c_stem, c_stem, channels, False
        cells = []
        for k in range(layers):
            reduction = k in red
            c = c * 2 if reduction else c
            cells.append(Cell(genotype.cell(CELL_TYPES[int(reduction)]), c_pp, c_p, c, reduction, reduction_prev, dim))
            c_pp, c_p, reduction_prev = c_p, genotype.nodes * c, reduction
        self.cells = nn.ModuleList(cells)
        self.pool = t["gap"](1)
        self.out_dim = c_p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.flat_input:
            x = x.unsqueeze(1)
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)
        return self.pool(s1).flatten(1)


@register_model("darts")
def darts(
    input_shape: Sequence[int] = (3, 32, 32),
    num_classes: int = 10,
    genotype: Mapping[str, Any] | str | None = None,
    channels: int = 16,
    layers: int = 8,
    stem_multiplier: int = 3,
    reductions: Sequence[int] | None = None,
) -> Classifier:
    """A DARTS network built from a genotype, for 1-D signals or 2-D images.

    Args:
        input_shape: ``(F,)`` (read as a 1-channel signal), ``(C, L)`` or ``(C, H, W)``.
        num_classes: C.
        genotype: :meth:`Genotype.to_json` form (default: DARTS_V2, the cell of Liu et al. 2019).
        channels: channels of the first cells (even, >= 2; default 16; doubles at each reduction).
        layers: cells (>= 1; default 8).
        stem_multiplier: the stem has ``stem_multiplier * channels`` channels (default 3).
        reductions: indices of the reduction cells (default ``layers // 3`` and ``2 * layers // 3``;
            the last cell for 2 cells).

    Raises:
        ConfigError: an invalid genotype, odd channels, bad shapes.

    Example:
        >>> net = create_model("darts", input_shape=(1, 40), num_classes=10, channels=8, layers=3)
        >>> net(torch.zeros(2, 1, 40)).shape
        torch.Size([2, 10])

    Paper: Liu, Simonyan & Yang, "DARTS: Differentiable Architecture Search", ICLR 2019
    (without the auxiliary head and drop-path of its retraining recipe).
    """
    g = DARTS_V2 if genotype is None else Genotype.from_json(genotype)
    if channels < 2 or channels % 2:
        raise ConfigError(f"darts: channels must be an even number >= 2, got {channels}")
    if stem_multiplier < 1:
        raise ConfigError(f"darts: stem_multiplier must be >= 1, got {stem_multiplier}")
    features = DartsFeatures(g, input_shape, int(channels), int(layers), int(stem_multiplier), reductions)
    return Classifier(features, features.out_dim, num_classes)
