"""The shape every registered model has: a feature extractor followed by a linear head.

Keeping ``features`` and ``head`` separate lets methods that need to act on the last
layer (margin boosting freezes it, curves treat it like any other weight) do so for
every registered model without knowing its internals.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Classifier", "feature_dim", "conv_out_shape"]


class Classifier(nn.Module):
    """``head(features(x))`` where ``features`` maps ``(B, *input_shape) -> (B, d)``.

    Args:
        features: module producing flat features of size ``d``.
        feature_dim: ``d``.
        num_classes: ``C``; the head is ``nn.Linear(d, C)``.
        head: an explicit head module instead of the default linear layer.
    """

    def __init__(self, features: nn.Module, feature_dim: int, num_classes: int, head: nn.Module | None = None) -> None:
        super().__init__()
        self.features = features
        self.feature_dim = int(feature_dim)
        self.num_classes = int(num_classes)
        self.head = head if head is not None else nn.Linear(self.feature_dim, self.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@torch.no_grad()
def feature_dim(module: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Size of the flat output of ``module`` for one input of ``input_shape`` (a dry run)."""
    was_training = module.training
    module.eval()
    out = module(torch.zeros(1, *input_shape))
    module.train(was_training)
    return int(out.reshape(1, -1).shape[1])


@torch.no_grad()
def conv_out_shape(module: nn.Module, input_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Output shape (without batch) of ``module`` for one input of ``input_shape``."""
    was_training = module.training
    module.eval()
    out = module(torch.zeros(1, *input_shape))
    module.train(was_training)
    return tuple(out.shape[1:])
