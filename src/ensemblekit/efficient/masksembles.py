"""Masksembles: fixed per-member binary masks with controlled overlap, in one shared network.

Durasov, Bagautdinov, Baque & Fua, "Masksembles for Uncertainty Estimation", CVPR 2021.
Each member m multiplies chosen feature maps by its own fixed 0/1 mask over the channels;
all weights are shared. The masks are drawn so that the members' overlap is controlled by
a ``scale`` s >= 1: each mask keeps k of ``k·s`` candidate channels at random and the
candidates no mask uses are dropped, k chosen so that exactly C channels remain. ``s = 1``
gives identical full masks (one network); larger s, less overlap (two masks share about
a fraction ``1 / (2s − 1)`` of their union, tested). The batch is repeated once per member.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from .shared import RepeatedBatchNet, find_layers, register_transform

__all__ = ["generate_masks", "MaskLayer", "MasksemblesNet", "to_masksembles"]


def _draw(k: int, members: int, scale: float, rng: np.random.Generator) -> np.ndarray:
    total = int(round(k * scale))
    masks = np.zeros((members, total), dtype=bool)
    for m in range(members):
        masks[m, rng.choice(total, size=k, replace=False)] = True
    return masks[:, masks.any(0)]


def generate_masks(channels: int, members: int, scale: float, seed: int = 0) -> torch.Tensor:
    """``(members, channels)`` 0/1 masks, each with the same number of ones, covering every channel.

    Raises:
        ConfigError: ``scale`` < 1, or no draw fits exactly ``channels`` (too few channels for this scale).
    """
    if not scale >= 1.0:
        raise ConfigError(f"masksembles scale must be >= 1, got {scale}")
    if scale == 1.0 or members == 1:
        return torch.ones(members, channels)
    rng = np.random.default_rng(seed)
    for _attempt in range(50):
        for k in range(1, channels + 1):
            masks = _draw(k, members, scale, rng)
            if masks.shape[1] == channels:
                return torch.as_tensor(masks, dtype=torch.float32)
            if masks.shape[1] > channels:
                break
    raise ConfigError(f"masksembles: cannot draw {members} masks over {channels} channels at scale {scale}; "
                      "lower the scale or the number of members, or mask a wider layer")


class MaskLayer(nn.Module):
    """Multiply member m's channels by its mask (inputs ``(M·B, C, ...)`` member-major)."""

    def __init__(self, masks: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("masks", masks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m, c = self.masks.shape
        if x.shape[1] != c:
            raise ConfigError(f"a Masksembles mask over {c} channels met an input with {x.shape[1]}")
        view = x.reshape(m, x.shape[0] // m, *x.shape[1:])
        return (view * self.masks.reshape(m, 1, c, *([1] * (x.dim() - 2)))).reshape(x.shape)


class MasksemblesNet(RepeatedBatchNet):
    """A model with mask layers; the batch is repeated per member."""


@register_transform("masksembles")
def to_masksembles(model: nn.Module, members: int = 4, scale: float = 2.0, where: str = "head", seed: int = 0) -> MasksemblesNet:
    """A copy of ``model`` with mask layers: before the last Linear (``where="head"``) or also after
    every hidden Linear/Conv layer (``where="all"``).

    Raises:
        ConfigError: no Linear head, bad ``where``, or masks that cannot be drawn.
    """
    if where not in ("head", "all"):
        raise ConfigError(f"masksembles where must be 'head' or 'all', got {where!r}")
    body = copy.deepcopy(model)
    layers = find_layers(body, (nn.Linear, nn.Conv1d, nn.Conv2d))
    if not layers or type(layers[-1][2]) is not nn.Linear:
        raise ConfigError(f"masksembles needs a model ending in a Linear head, got {type(model).__name__}")
    parent, name, head = layers[-1]
    setattr(parent, name, nn.Sequential(MaskLayer(generate_masks(head.in_features, members, scale, seed)), head))
    if where == "all":
        for i, (parent, name, layer) in enumerate(layers[:-1]):
            out = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
            setattr(parent, name, nn.Sequential(layer, MaskLayer(generate_masks(out, members, scale, seed + 1 + i))))
    return MasksemblesNet(body, members)
