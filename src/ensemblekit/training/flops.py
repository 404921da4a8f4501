"""Measured floating-point operations (``torch.utils.flop_counter``), for cost columns.

FLOPs are counted with the formulas of :mod:`torch.utils.flop_counter` on the operations a
step really runs (the stacked grouped convolutions, ``vmap``'s batched kernels, a
hypernetwork's generator), not estimated from layer shapes. One correction is applied:
PyTorch's formula for the weight gradient of a convolution ignores ``groups`` and so
counts a grouped convolution's weight gradient ``groups`` times over, which would make M
stacked members look more expensive than M separate ones. Here the backward of a
convolution costs the forward's FLOPs once per gradient it computes (input and/or
weight), which is exact for grouped and ordinary convolutions alike.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import conv_flop_count, flop_registry, shape_wrapper

__all__ = ["count_flops", "flop_counter", "TotalFlops", "inference_flops", "epoch_flops"]

_aten = torch.ops.aten


def _conv_backward_flop(grad_out_shape: Any, x_shape: Any, w_shape: Any, _bias: Any, _stride: Any, _padding: Any, _dilation: Any,
                        transposed: bool, _output_padding: Any, _groups: Any, output_mask: Any, out_shape: Any, **kwargs: Any) -> int:
    forward = conv_flop_count(x_shape, w_shape, grad_out_shape, transposed=transposed)
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


class TotalFlops(TorchDispatchMode):
    """Sums the FLOPs of every operation run under it, by ``torch.utils.flop_counter``'s formulas
    (the registry :class:`~torch.utils.flop_counter.FlopCounterMode` uses, with the
    grouped-convolution correction), without FlopCounterMode's per-module breakdown: no module
    hooks, a fraction of its overhead on the many small operations of a post-hoc fit."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0
        self._formulas = {**flop_registry, _aten.convolution_backward: shape_wrapper(_conv_backward_flop)}

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func._overloadpacket not in self._formulas and func is not torch.ops.prim.device.default:
            with self:  # an operation without a formula counts through the ones it decomposes into (as FlopCounterMode)
                out = func.decompose(*args, **kwargs)
            if out is not NotImplemented:
                return out
        out = func(*args, **kwargs)
        formula = self._formulas.get(func._overloadpacket)
        if formula is not None:
            self.total += int(formula(*args, **kwargs, out_val=out))
        return out

    def get_total_flops(self) -> int:
        return int(self.total)


@contextlib.contextmanager
def flop_counter() -> Iterator[TotalFlops]:
    """A FLOP counter with the grouped-convolution correction; read ``.get_total_flops()``."""
    with TotalFlops() as counter:
        yield counter


def count_flops(fn: Callable[[], Any]) -> tuple[Any, int]:
    """Run ``fn()`` under :func:`flop_counter`; returns ``(its result, FLOPs)``."""
    with flop_counter() as counter:
        out = fn()
    return out, int(counter.get_total_flops())


def epoch_flops(model: Any, data: Any, batch_size: int, per_member: bool = False) -> float:
    """Measured FLOPs of one training epoch of ``model`` on ``data.train``: one forward and
    backward step (cross-entropy of every member) on a batch, per example, times the examples.

    The model is used as it is (call it on a copy if it must stay untouched); the step's
    gradients are cleared."""
    import torch.nn.functional as F

    x, y = data.train.tensors()
    b = min(int(batch_size), len(y))
    xb, yb = x[:b].to(model.device), y[:b].to(model.device)
    m = model.num_members
    if per_member:
        xb = xb.unsqueeze(0).expand(m, *xb.shape)
    was = getattr(model, "training", False)
    model.train()
    try:
        def step() -> None:
            logits = model(xb, per_member=per_member)
            F.cross_entropy(logits.reshape(-1, logits.shape[-1]), yb.repeat(logits.shape[0] * logits.shape[1] // b)).backward()

        with torch.random.fork_rng(devices=[]):
            _, flops = count_flops(step)
    finally:
        model.train(was)
        for g in model.param_groups():
            for t in g.params.values():
                t.grad = None
    return flops / b * len(y)


@torch.no_grad()
def inference_flops(model: Any, x: torch.Tensor) -> float:
    """FLOPs per example of one eval-mode forward pass of ``model`` (all members) on the batch ``x``."""
    was = getattr(model, "training", False)
    model.eval()
    try:
        _, flops = count_flops(lambda: model(x))
    finally:
        model.train(was)
    return flops / max(1, x.shape[0])
