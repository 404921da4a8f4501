"""One member of a stacked ensemble, run on its own so that a layer's activations can be read.

The stacked forward pass (vmap over the members, or a compiled plan) gives no place to read
an intermediate activation. Here member ``j`` of a group runs alone: the group's template
module through ``torch.func.functional_call`` with that member's slices of the stacked
parameters and buffers (views, so nothing is copied), with a hook on the layer of interest.
A hook sees the tensors of the member being run, which a copy of the template's own
tensors would not (the template holds member 0's).
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import torch
from torch import nn
from torch.func import functional_call

from ..errors import ConfigError

__all__ = ["iter_members", "capture"]


def iter_members(ensemble: Any) -> Iterator[tuple[int, Any, int]]:
    """``(member index, group, index in the group)`` of every member of a stacked ensemble, in order."""
    i = 0
    for group in ensemble.groups:
        for j in range(group.num_members):
            yield i, group, j
            i += 1


@torch.no_grad()
def capture(group: Any, j: int, x: torch.Tensor, layers: Sequence[nn.Module], output: bool = False) -> list[torch.Tensor]:
    """The inputs (or, with ``output``, the outputs) of ``layers`` of the group's template when
    member ``j`` runs on ``x``, one tensor per layer (the last call when a layer runs twice).

    The template runs in the mode it is in (callers put the ensemble in eval mode).

    Raises:
        ConfigError: a layer that the model's forward never called.
    """
    seen: dict[int, torch.Tensor] = {}
    handles = []
    for k, layer in enumerate(layers):
        if output:
            handles.append(layer.register_forward_hook(lambda mod, args, out, k=k: seen.__setitem__(k, out)))
        else:
            handles.append(layer.register_forward_pre_hook(lambda mod, args, k=k: seen.__setitem__(k, args[0])))
    try:
        # detached: nothing here needs gradients, and a parametrised weight (spectral_norm) that requires grad
        # but has no graph under no_grad trips FlopCounterMode's module tracker (a measured fit counts FLOPs)
        functional_call(group.template, {k: v.detach() for k, v in group.member_state(j).items()}, (x,))
    finally:
        for h in handles:
            h.remove()
    missing = [type(layers[k]).__name__ for k in range(len(layers)) if k not in seen]
    if missing:
        raise ConfigError(f"the model's forward never called its {', '.join(missing)} layer, whose activations are needed")
    return [seen[k] for k in range(len(layers))]
