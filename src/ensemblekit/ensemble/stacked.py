"""Stacked kernels: the forward pass of M same-architecture members as a few wide ops.

``vmap(functional_call(...))`` runs any module, but on CPU a vmapped convolution is
several times slower than the same arithmetic written as one grouped convolution
(members folded into channels), and a vmapped linear layer slower than one batched
matrix product. For networks built only from common layers (``nn.Sequential`` and
:class:`~ensemblekit.models.base.Classifier` containers of convolutions, BatchNorm,
linear layers, pooling, dropout and element-wise activations: the registered ``mlp``,
``cnn1d``, ``cnn2d`` and ``vgg``) :func:`compile_plan` builds a plan that computes
exactly what the vmapped module computes, from the same stacked parameters and buffers
(BatchNorm running statistics are updated in place, per member). The residual blocks of
the registered ``resnet`` (pre-activation basic and bottleneck blocks, projection
shortcuts, stochastic depth) and ``wrn`` are compiled too: a block is a branch of
sub-plans whose outputs are added. Anything else returns ``None`` and the ensemble keeps
the vmap path. ``tests/ensemble/test_stacked.py`` checks outputs, gradients and BatchNorm buffers
against vmap for every supported layer and block.

Activations travel in one of three layouts:

- ``shared``: ``(B, ...)``, the same for every member (the input, before any weight);
- ``chan``: ``(B, M*C, *spatial)``, members folded into channels (convolutions, BN, pooling);
- ``member``: ``(M, B, *features)`` (linear layers).
"""

from __future__ import annotations

import os
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..models.base import Classifier
from ..models.layers import DropPath

__all__ = ["StackedPlan", "compile_plan", "stacked_kernels_enabled"]

SHARED, CHAN, MEMBER = "shared", "chan", "member"

_ELEMENTWISE = (nn.ReLU, nn.GELU, nn.Tanh, nn.SiLU, nn.Sigmoid, nn.LeakyReLU, nn.ELU, nn.Identity)
_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)
_CONVS = (nn.Conv1d, nn.Conv2d)
_BNS = (nn.BatchNorm1d, nn.BatchNorm2d)


def stacked_kernels_enabled() -> bool:
    """False when ``ENSEMBLEKIT_STACKED=0`` (forces the vmap path everywhere, e.g. to compare;
    ``loop`` and ``plan`` choose between a member loop and the plan, see
    :func:`ensemblekit.ensemble.group.member_loop`)."""
    return os.environ.get("ENSEMBLEKIT_STACKED", "1") != "0"


class _State:
    """An activation and its layout; ``m`` is the number of members."""

    __slots__ = ("x", "layout", "m")

    def __init__(self, x: torch.Tensor, layout: str, m: int) -> None:
        self.x, self.layout, self.m = x, layout, m

    def to_member(self) -> torch.Tensor:
        if self.layout == MEMBER:
            return self.x
        if self.layout == SHARED:
            return self.x.unsqueeze(0).expand(self.m, *self.x.shape)
        b, mc = self.x.shape[:2]
        return self.x.reshape(b, self.m, mc // self.m, *self.x.shape[2:]).transpose(0, 1)

    def to_chan(self) -> torch.Tensor:
        if self.layout == CHAN:
            return self.x
        x = self.to_member()  # (M, B, C, ...)
        return x.transpose(0, 1).reshape(x.shape[1], self.m * x.shape[2], *x.shape[3:])


Op = Callable[[_State, dict, dict], _State]


def _channels_last(w: torch.Tensor) -> torch.Tensor:
    """``w`` in channels-last memory, unambiguously.

    With one input channel (a first layer) NCHW and channels-last strides describe the
    same bytes and ``contiguous(memory_format=channels_last)`` keeps the NCHW strides;
    oneDNN then returns an NCHW output, and BatchNorm, the activation and their backward
    passes mix it with the channels-last gradients of the next convolution: every mix is
    a transposing copy or a slow strided kernel. Explicit channels-last strides keep one
    layout through the network (measured: M = 5 cnn1d training steps 1.3x faster).
    """
    w = w.contiguous(memory_format=torch.channels_last)
    if w.shape[1] == 1 and w.stride(1) != 1:
        n, _, h, wd = w.shape
        w = w.as_strided(w.shape, (h * wd, 1, wd, 1))
    return w


def _shared_conv1d(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None, stride: int, padding: int) -> torch.Tensor:
    """A 1-D convolution of an input every member shares, ``(B, Ci, L)``, with the
    members' filters ``(M*Co, Ci, k)``, as im2col and one matrix product.

    The product's ``(B*Lo, M*Co)`` result is the channels-last ``(B, M*Co, Lo)`` the next
    layers read, with no copy; and the weight gradient is one small matrix product where
    oneDNN's kernel for a first layer (few input channels, many filters) took 1.3 ms of a
    5 ms step (M = 5 cnn1d; the input needs no gradient).
    """
    b, ci, _ = x.shape
    k = w.shape[-1]
    cols = (F.pad(x, (padding, padding)) if padding else x).unfold(-1, k, stride)  # (B, Ci, Lo, k)
    lo = cols.shape[2]
    cols = cols.transpose(1, 2).reshape(b * lo, ci * k)
    flat = w.reshape(w.shape[0], ci * k).t()
    out = torch.addmm(bias, cols, flat) if bias is not None else cols @ flat
    return out.reshape(b, lo, -1).transpose(1, 2)


def _conv(mod: nn.Conv1d | nn.Conv2d, name: str) -> Op:
    one_d = isinstance(mod, nn.Conv1d)
    # A 1-D convolution runs as a 2-D one on a (B, C, 1, L) view in channels-last memory:
    # on CPU (oneDNN) that is about twice as fast as the grouped conv1d kernel, and the
    # BatchNorm that follows reads the same layout.
    kw = {
        "stride": (1, *mod.stride) if one_d else mod.stride,
        "padding": (0, *mod.padding) if one_d else mod.padding,
        "dilation": (1, *mod.dilation) if one_d else mod.dilation,
    }
    has_bias = mod.bias is not None
    im2col = one_d and mod.groups == 1 and mod.dilation == (1,)

    def op(s: _State, p: dict, b: dict) -> _State:
        w = p[name + "weight"]
        w = w.reshape(-1, *w.shape[2:])  # (M*Co, Ci/g, *k)
        if im2col and s.layout == SHARED:
            out = _shared_conv1d(s.x, w, p[name + "bias"].reshape(-1) if has_bias else None, mod.stride[0], mod.padding[0])
            return _State(out, CHAN, s.m)
        if one_d:
            w = w.unsqueeze(2)
        w = _channels_last(w)
        bias = p[name + "bias"].reshape(-1) if has_bias else None
        if s.layout == SHARED and mod.groups == 1:
            # Every member sees the same input: one dense convolution with M*Co filters.
            x, groups = s.x, 1
        else:
            x, groups = s.to_chan(), mod.groups * s.m
        out = F.conv2d(x.unsqueeze(2) if one_d else x, w, bias, groups=groups, **kw)
        out = out.contiguous(memory_format=torch.channels_last)  # a no-op unless oneDNN chose NCHW
        return _State(out.squeeze(2) if one_d else out, CHAN, s.m)

    return op


def _batchnorm(mod: nn.BatchNorm1d | nn.BatchNorm2d, name: str) -> Op:
    def op(s: _State, p: dict, b: dict) -> _State:
        member_2d = s.layout != CHAN and s.to_member().dim() == 3  # (M, B, D): BatchNorm1d after a linear layer
        x = s.to_chan()
        tracking = mod.track_running_stats and (name + "running_mean") in b
        factor = 0.0 if mod.momentum is None else mod.momentum
        if mod.training and tracking:
            nbt = b[name + "num_batches_tracked"]
            nbt.add_(1)
            if mod.momentum is None:  # cumulative average, as nn.BatchNorm does
                factor = 1.0 / float(nbt[0])
        use_batch = mod.training or not tracking
        rm = b[name + "running_mean"].view(-1) if tracking else None
        rv = b[name + "running_var"].view(-1) if tracking else None
        w = p[name + "weight"].reshape(-1) if mod.affine else None
        bias = p[name + "bias"].reshape(-1) if mod.affine else None
        if x.dim() == 3:  # (B, C, L): normalise the 4-D view, the layout 1-D convolutions leave
            out = F.batch_norm(x.unsqueeze(2), rm, rv, w, bias, use_batch, factor, mod.eps).squeeze(2)
        else:
            out = F.batch_norm(x, rm, rv, w, bias, use_batch, factor, mod.eps)
        if member_2d:
            return _State(out.reshape(out.shape[0], s.m, -1).transpose(0, 1), MEMBER, s.m)
        return _State(out, CHAN, s.m)

    return op


def _linear(mod: nn.Linear, name: str) -> Op:
    has_bias = mod.bias is not None

    def op(s: _State, p: dict, b: dict) -> _State:
        w = p[name + "weight"]  # (M, O, I)
        bias = p[name + "bias"] if has_bias else None
        if s.layout == SHARED:
            out = F.linear(s.x, w.reshape(-1, w.shape[-1]), bias.reshape(-1) if has_bias else None)  # (..., M*O)
            out = out.reshape(*s.x.shape[:-1], s.m, w.shape[1]).movedim(-2, 0)
            return _State(out, MEMBER, s.m)
        x = s.to_member()
        flat = x.reshape(s.m, -1, x.shape[-1])
        out = torch.baddbmm(bias.unsqueeze(1), flat, w.transpose(1, 2)) if has_bias else torch.bmm(flat, w.transpose(1, 2))
        return _State(out.reshape(*x.shape[:-1], w.shape[1]), MEMBER, s.m)

    return op


def _flatten(mod: nn.Flatten) -> Op | None:
    if mod.start_dim != 1 or mod.end_dim != -1:
        return None

    def op(s: _State, p: dict, b: dict) -> _State:
        if s.layout == SHARED:
            return _State(s.x.flatten(1), SHARED, s.m)
        if s.layout == CHAN and s.x.dim() > 2:
            # Channels-last (B, M*C, *S) -> (M, B, C*prod(S)), starting from the view in
            # memory order: the same values as to_member().reshape(...), but the gradient
            # then returns in channels-last memory, like the activation it meets (mixed
            # layouts make ReLU's backward 10x slower).
            x = s.x.movedim(1, -1)  # (B, *S, M*C)
            x = x.reshape(*x.shape[:-1], s.m, -1).movedim(-2, 0).movedim(-1, 2)  # (M, B, C, *S)
            return _State(x.reshape(s.m, x.shape[1], -1), MEMBER, s.m)
        x = s.to_member()
        return _State(x.reshape(x.shape[0], x.shape[1], -1), MEMBER, s.m)

    return op


def _elementwise(mod: nn.Module) -> Op:
    def op(s: _State, p: dict, b: dict) -> _State:
        return _State(mod(s.x), s.layout, s.m)

    return op


def _dropout(mod: nn.Dropout) -> Op:
    def op(s: _State, p: dict, b: dict) -> _State:
        if not mod.training or mod.p == 0:
            return s
        # Members draw independent masks (vmap's randomness="different"), so a shared
        # activation is expanded first.
        x = s.to_member().contiguous() if s.layout == SHARED else s.x
        return _State(F.dropout(x, mod.p, True), MEMBER if s.layout == SHARED else s.layout, s.m)

    return op


def _pool(mod: nn.Module) -> Op:
    def op(s: _State, p: dict, b: dict) -> _State:
        if s.layout == SHARED:
            return _State(mod(s.x), SHARED, s.m)
        return _State(mod(s.to_chan()), CHAN, s.m)

    return op


def _drop_path(mod: DropPath) -> Op:
    keep = 1.0 - mod.p

    def op(s: _State, params: dict, b: dict) -> _State:
        if not mod.training or mod.p == 0.0:
            return s
        # One Bernoulli draw per (member, sample), like vmap(randomness="different").
        x = s.to_chan()
        mask = (torch.rand(x.shape[0], s.m, 1, device=x.device) < keep).to(x.dtype) / keep
        return _State((x.reshape(x.shape[0], s.m, -1) * mask).reshape(x.shape), CHAN, s.m)

    return op


def _run(ops: list[Op], s: _State, p: dict, b: dict) -> _State:
    for op in ops:
        s = op(s, p, b)
    return s


def _residual(pre: list[Op], main: list[Op], shortcut: list[Op] | None, shortcut_from_pre: bool) -> Op:
    """``main(pre(x)) + shortcut(pre(x) or x)`` (identity shortcut when ``shortcut`` is None)."""

    def op(s: _State, p: dict, b: dict) -> _State:
        a = _run(pre, s, p, b)
        out = _run(main, a, p, b).to_chan()
        src = a if shortcut_from_pre else s
        short = src if shortcut is None else _run(shortcut, src, p, b)
        return _State(out + short.to_chan(), CHAN, s.m)

    return op


def _block_layout(module: nn.Module) -> tuple[list[tuple[str, str]], list[tuple[str, str]], str | None, bool] | None:
    """How a registered residual block computes: (pre, main, shortcut attribute, shortcut reads pre).

    ``pre`` and ``main`` list ``(kind, attribute)`` steps, kind ``mod`` (a child module)
    or ``relu``; the layouts mirror the blocks' ``forward`` methods in
    :mod:`ensemblekit.models.resnet` and :mod:`ensemblekit.models.wrn`.
    """
    from ..models.resnet import PreActBasic, PreActBottleneck
    from ..models.wrn import WideBasic

    kind = type(module)
    if kind is PreActBasic:
        main = [("mod", "bn1"), ("relu", ""), ("mod", "conv1"), ("mod", "bn2"), ("relu", ""), ("mod", "conv2"), ("mod", "drop_path")]
        return [], main, "downsample", False
    if kind is PreActBottleneck:
        main = [("mod", "bn1"), ("relu", ""), ("mod", "conv1"), ("mod", "bn2"), ("relu", ""), ("mod", "conv2"),
                ("mod", "bn3"), ("relu", ""), ("mod", "conv3"), ("mod", "drop_path")]
        return [], main, "downsample", False
    if kind is WideBasic:
        main = [("mod", "conv1"), ("mod", "bn2"), ("relu", ""), ("mod", "dropout"), ("mod", "conv2")]
        return [("mod", "bn1"), ("relu", "")], main, "shortcut", True
    return None


def _compile_steps(module: nn.Module, prefix: str, steps: list[tuple[str, str]]) -> list[Op] | None:
    ops: list[Op] = []
    for kind, attr in steps:
        if kind == "relu":
            ops.append(_elementwise(nn.ReLU()))  # the blocks' functional F.relu
        elif not _compile(getattr(module, attr), f"{prefix}{attr}.", ops):
            return None
    return ops


def _compile_block(module: nn.Module, prefix: str, ops: list[Op]) -> bool:
    layout = _block_layout(module)
    if layout is None:
        return False
    pre_steps, main_steps, short_attr, from_pre = layout
    pre, main = _compile_steps(module, prefix, pre_steps), _compile_steps(module, prefix, main_steps)
    if pre is None or main is None:
        return False
    short_mod = getattr(module, short_attr) if short_attr else None
    shortcut = None
    if short_mod is not None:
        shortcut = []
        if not _compile(short_mod, f"{prefix}{short_attr}.", shortcut):
            return False
    ops.append(_residual(pre, main, shortcut, from_pre))
    return True


def _compile(module: nn.Module, prefix: str, ops: list[Op]) -> bool:
    kind = type(module)
    if kind is DropPath:
        ops.append(_drop_path(module))
        return True
    if _block_layout(module) is not None:
        return _compile_block(module, prefix, ops)
    if kind is nn.Sequential:
        return all(_compile(child, f"{prefix}{n}.", ops) for n, child in module.named_children())
    if kind is Classifier:
        return _compile(module.features, prefix + "features.", ops) and _compile(module.head, prefix + "head.", ops)
    if kind in _CONVS:
        if module.padding_mode != "zeros" or isinstance(module.padding, str):
            return False
        ops.append(_conv(module, prefix))
    elif kind in _BNS:
        ops.append(_batchnorm(module, prefix))
    elif kind is nn.Linear:
        ops.append(_linear(module, prefix))
    elif kind is nn.Flatten:
        op = _flatten(module)
        if op is None:
            return False
        ops.append(op)
    elif kind is nn.Dropout:
        ops.append(_dropout(module))
    elif kind in _ELEMENTWISE:
        ops.append(_elementwise(module))
    elif kind in _POOLS:
        ops.append(_pool(module))
    else:
        return False
    return True


class StackedPlan:
    """A compiled forward pass over stacked members (see the module docstring)."""

    def __init__(self, ops: list[Op]) -> None:
        self.ops = ops

    def __call__(self, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], x: torch.Tensor, num_members: int, per_member: bool = False) -> torch.Tensor:
        """Logits ``(M, B, C)`` for ``x`` ``(B, ...)`` or ``(M, B, ...)`` when ``per_member``."""
        s = _State(x, MEMBER if per_member else SHARED, num_members)
        for op in self.ops:
            s = op(s, params, buffers)
        return s.to_member()


def compile_plan(template: nn.Module) -> StackedPlan | None:
    """A :class:`StackedPlan` for ``template``, or ``None`` when a layer is not supported.

    Supported: ``nn.Sequential`` and ``Classifier`` containers of Conv1d/Conv2d (zero
    padding), BatchNorm1d/2d, Linear, Flatten, Dropout, max/avg/adaptive-avg pooling
    and element-wise activations. Subclasses of these are not supported (their forward
    may differ), nor are parametrized modules or modules with hooks.
    """
    if not stacked_kernels_enabled():
        return None
    for m in template.modules():
        if m._forward_hooks or m._forward_pre_hooks or getattr(m, "parametrizations", None):
            return None
    ops: list[Op] = []
    return StackedPlan(ops) if _compile(template, "", ops) else None
