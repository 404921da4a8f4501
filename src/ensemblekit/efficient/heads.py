"""Hydra: one shared body, M light heads (Tran et al., "Hydra: Preserving Ensemble Diversity for Model Distillation", 2020).

The model's final linear layer ``Linear(d, K)`` becomes M heads ``(M, K, d)`` over the features
the rest of the model (the body) computes once: a forward pass costs the body plus M small
matrix products, and the M heads are M members (their spread is the network's uncertainty).
Distilling an M-member ensemble into it (``distill`` with ``loss: hydra``) gives head m member
m's predictions to learn. Each head starts from its own draw of ``nn.Linear``'s initialisation.
With M = 1 it is the base model (tested).
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from ..errors import ConfigError
from ..models.gaussian_head import final_linear
from .shared import MemberNet, fold, register_transform

__all__ = ["HeadsNet", "to_heads"]


class HeadsNet(MemberNet):
    """``body`` (the model without its final linear layer) and M stacked linear heads."""

    member_params = ("weight", "bias")

    def __init__(self, body: nn.Module, members: int, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__(members)
        self.body = body
        self.weight = nn.Parameter(torch.empty(members, out_features, in_features))
        self.bias = nn.Parameter(torch.empty(members, out_features)) if bias else None
        bound = 1.0 / math.sqrt(in_features)  # nn.Linear's own initialisation, one draw per head
        with torch.no_grad():
            for m in range(members):
                nn.init.kaiming_uniform_(self.weight[m], a=math.sqrt(5))
                if self.bias is not None:
                    nn.init.uniform_(self.bias[m], -bound, bound)

    def forward(self, x: torch.Tensor, per_member: bool = False) -> torch.Tensor:
        m = self.members
        if per_member:
            feats = self.body(fold(x, m, True)).reshape(m, x.shape[1], -1)  # (M, B, d): each head its own batch
            out = torch.einsum("mbd,mkd->mbk", feats, self.weight)
        else:
            feats = self.body(x).reshape(x.shape[0], -1)  # (B, d), once for all heads
            out = torch.einsum("bd,mkd->mbk", feats, self.weight)
        return out + self.bias.unsqueeze(1) if self.bias is not None else out


@register_transform("heads")
def to_heads(model: nn.Module, members: int = 5) -> HeadsNet:
    """A copy of ``model`` whose final ``nn.Linear`` is M heads over the shared features.

    Raises:
        ConfigError: the model does not end in an ``nn.Linear`` (the rule of
            :func:`~ensemblekit.models.gaussian_head.final_linear`).
    """
    body = copy.deepcopy(model)
    found = final_linear(body)
    if found is None or found[0] is None:
        raise ConfigError(f"heads (Hydra) needs a model whose final layer is an nn.Linear after a body, got {type(model).__name__}")
    parent, name, head = found
    setattr(parent, name, nn.Identity())
    net = HeadsNet(body, members, head.in_features, head.out_features, bias=head.bias is not None)
    if members == 1:  # the base model exactly
        with torch.no_grad():
            net.weight[0].copy_(head.weight)
            if net.bias is not None:
                net.bias[0].copy_(head.bias)
    return net
