"""Members of one architecture stacked along a leading member axis (:class:`MemberGroup`).

Every parameter and buffer of a group is one tensor of shape ``(M, *shape)``, and the
forward pass is ``vmap(functional_call(template, ...))`` over the member axis, so M networks
cost one vectorised pass. BatchNorm running statistics live in the stacked buffers and stay
per member; dropout draws different masks per member (``randomness="different"``). For
networks made of common layers the same computation runs as a few wide grouped
convolutions and batched matrix products instead (:mod:`ensemblekit.ensemble.stacked`;
several times faster than vmap on CPU, numerically the same).
"""

from __future__ import annotations

import copy
import os
import json
from collections import OrderedDict
from typing import Any, Callable, Sequence

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from ..errors import ConfigError
from .stacked import StackedPlan, compile_plan

__all__ = ["MemberGroup", "member_loop", "state_key", "parse_state_key"]


def state_key(group: int, kind: str, name: str) -> str:
    """The name of a stacked tensor in checkpoints and ensemble files: ``g<group>.<kind>.<name>``.

    ``kind`` is ``param`` or ``buffer``. The one place this format is built
    (:func:`parse_state_key` is the one place it is read).
    """
    if kind not in ("param", "buffer"):
        raise ValueError(f"kind must be 'param' or 'buffer', got {kind!r}")
    return f"g{group}.{kind}.{name}"


def parse_state_key(key: str) -> tuple[int, str, str]:
    """``(group, kind, name)`` of a name built by :func:`state_key`."""
    head, kind, name = key.split(".", 2)
    if not head.startswith("g") or not head[1:].isdigit() or kind not in ("param", "buffer"):
        raise ValueError(f"not an ensemble state key: {key!r}")
    return int(head[1:]), kind, name


def member_loop(template: nn.Module, device: torch.device) -> bool:
    """Whether members run one after another (each a dense forward pass on views of the
    stacked tensors) instead of as one stacked pass.

    On CPU a 2-D convolution of M members folded into channels (``groups=M``) is slower than
    M dense convolutions (oneDNN; 2.0x at 16 channels on 32x32 maps, equal from 32 channels
    on), and vmap is slower still; 1-D convolutions gain from the grouped form. So by
    default members of a network with ``Conv2d`` layers loop on CPU and stack everywhere
    else. ``ENSEMBLEKIT_STACKED``: ``loop`` always loops, ``plan`` always stacks (the
    grouped plan where it exists), ``0`` forces vmap.
    """
    mode = os.environ.get("ENSEMBLEKIT_STACKED", "1")
    if mode in ("loop", "plan", "0"):
        return mode == "loop"
    return device.type == "cpu" and any(isinstance(m, nn.Conv2d) for m in template.modules())


class MemberGroup:
    """Members of one architecture with stacked parameters and buffers.

    Args:
        template: a module of the architecture; only its structure is used.
        params: name -> tensor ``(M, *shape)`` (leaf tensors; frozen ones have
            ``requires_grad=False``).
        buffers: name -> tensor ``(M, *shape)``.
        spec: JSON-able model spec that rebuilds ``template`` (``None`` for a plain callable).
    """

    def __init__(self, template: nn.Module, params: "OrderedDict[str, torch.Tensor]", buffers: "OrderedDict[str, torch.Tensor]", spec: dict[str, Any] | None = None) -> None:
        if not params:
            raise ConfigError("a member group needs at least one parameter")
        self.template = template
        self.params = params
        self.buffers = buffers
        self.spec = spec
        sizes = {t.shape[0] for t in [*params.values(), *buffers.values()]}
        if len(sizes) != 1:
            raise ConfigError(f"stacked tensors disagree on the number of members: {sorted(sizes)}")
        self.num_members = sizes.pop()
        self._vmapped: dict[bool, Callable[..., torch.Tensor]] = {}
        # Common layers run as wide grouped/batched ops; anything else through vmap.
        self.plan: StackedPlan | None = compile_plan(template)
        self.loop = member_loop(template, next(iter(params.values())).device)

    @classmethod
    def from_modules(cls, modules: Sequence[nn.Module], spec: dict[str, Any] | None = None) -> "MemberGroup":
        params, buffers = stack_module_state(list(modules))
        template = copy.deepcopy(modules[0])
        flags = dict(modules[0].named_parameters())
        out_params = OrderedDict((k, v.detach().clone().requires_grad_(flags[k].requires_grad)) for k, v in params.items())
        out_buffers = OrderedDict((k, v.detach().clone()) for k, v in buffers.items())
        return cls(template, out_params, out_buffers, spec)

    def _call(self, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.template, (params, buffers), (x,))

    def forward(self, x: torch.Tensor, per_member: bool = False, params: dict[str, torch.Tensor] | None = None,
                members: slice | None = None) -> torch.Tensor:
        """Logits ``(M, B, C)`` for ``x`` of shape ``(B, ...)``, or ``(M, B, ...)`` when ``per_member``.

        ``members`` (a slice of this group's members) runs only those: ``x`` then holds
        only their inputs when ``per_member``; the result is ``(len, B, C)``; parameters
        and buffers are views, so gradients and BatchNorm updates land in the stacked storage.
        """
        p = self.params if params is None else params
        b, n = self.buffers, self.num_members
        if members is not None:
            p = {k: v[members] for k, v in p.items()}
            b = {k: v[members] for k, v in b.items()}
            n = len(range(*members.indices(self.num_members)))
        if n == 1 or self.loop:
            # One member (or the member loop): skip vmap's overhead; indexing keeps views of
            # the stacked tensors, so gradients and in-place BatchNorm updates land in the
            # stacked storage.
            # Without grad the parameter views are detached (free): a view of a parameter taken under
            # no_grad requires grad with no graph, which FlopCounterMode's module tracker cannot hook
            # when a module takes it as an input (a parametrisation: spectral_norm).
            grad = torch.is_grad_enabled()
            outs = []
            for m in range(n):
                xs = x[m] if per_member else x
                pm = {k: v[m] if grad else v[m].detach() for k, v in p.items()}
                outs.append(self._call(pm, {k: v[m] for k, v in b.items()}, xs))
            return torch.stack(outs)
        if self.plan is not None:
            return self.plan(p, b, x, n, per_member)
        fn = self._vmapped.get(per_member)
        if fn is None:
            fn = vmap(self._call, in_dims=(0, 0, 0 if per_member else None), randomness="different")
            self._vmapped[per_member] = fn
        return fn(p, b, x)

    def signature(self) -> str:
        shapes = [(k, tuple(v.shape[1:]), str(v.dtype)) for k, v in [*self.params.items(), *self.buffers.items()]]
        return json.dumps([type(self.template).__qualname__, repr(self.template), shapes, self.spec], default=str)

    def member_state(self, i: int) -> dict[str, torch.Tensor]:
        return {**{k: v[i] for k, v in self.params.items()}, **{k: v[i] for k, v in self.buffers.items()}}

    def to(self, device: torch.device | str) -> "MemberGroup":
        params = OrderedDict((k, v.detach().to(device).requires_grad_(v.requires_grad)) for k, v in self.params.items())
        buffers = OrderedDict((k, v.to(device)) for k, v in self.buffers.items())
        return MemberGroup(copy.deepcopy(self.template).to(device), params, buffers, self.spec)

    def select(self, indices: Sequence[int]) -> "MemberGroup":
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        params = OrderedDict((k, v.detach()[idx.to(v.device)].clone().requires_grad_(v.requires_grad)) for k, v in self.params.items())
        buffers = OrderedDict((k, v[idx.to(v.device)].clone()) for k, v in self.buffers.items())
        return MemberGroup(copy.deepcopy(self.template), params, buffers, self.spec)

    @staticmethod
    def concat(groups: Sequence["MemberGroup"]) -> "MemberGroup":
        first = groups[0]
        params = OrderedDict((k, torch.cat([g.params[k].detach() for g in groups]).requires_grad_(v.requires_grad)) for k, v in first.params.items())
        buffers = OrderedDict((k, torch.cat([g.buffers[k] for g in groups])) for k in first.buffers)
        return MemberGroup(copy.deepcopy(first.template), params, buffers, first.spec)
