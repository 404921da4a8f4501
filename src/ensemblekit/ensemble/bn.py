"""Recompute BatchNorm statistics for stacked members (SWA averages, curve points).

Weights that were never trained on directly (an average of iterates, a point on a
curve) have meaningless running statistics; one pass over the training data in train
mode with a *cumulative* average restores them (``torch.optim.swa_utils.update_bn``
does this for one module; this version works for every member of an Ensemble at once,
under ``vmap``, where ``momentum=None`` cannot be used).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..data.dataset import Split
from .container import Ensemble

__all__ = ["has_batchnorm", "recompute_bn"]


def _bn_modules(ensemble: Ensemble) -> list[list[nn.modules.batchnorm._BatchNorm]]:
    return [[m for m in g.template.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)] for g in ensemble.groups]


def has_batchnorm(ensemble: Ensemble) -> bool:
    return any(_bn_modules(ensemble))


@torch.no_grad()
def recompute_bn(ensemble: Ensemble, split: Split, batch_size: int = 256, params: Sequence[dict[str, torch.Tensor]] | None = None, max_batches: int | None = None) -> Ensemble:
    """Reset every member's BatchNorm statistics and re-estimate them on ``split`` (in place).

    Batch ``k`` (0-based) is folded in with momentum ``1 / (k + 1)``, i.e. the running
    statistics become the plain average over all batches, as with ``momentum=None``.

    Args:
        ensemble: the members (all of them are updated together).
        split: usually ``data.train``, in order (no augmentation).
        batch_size: examples per forward pass.
        params: per-group parameter dicts to use instead of the ensemble's own (a curve point).
        max_batches: stop after this many batches (default: the whole split).

    Returns:
        ``ensemble`` (modified in place; left in eval mode).
    """
    modules = _bn_modules(ensemble)
    if not any(modules):
        return ensemble.eval()
    for g, mods in zip(ensemble.groups, modules):
        for name, buf in g.buffers.items():
            if name.endswith("running_mean") or name.endswith("num_batches_tracked"):
                buf.zero_()
            elif name.endswith("running_var"):
                buf.fill_(1.0)
    saved = [[m.momentum for m in mods] for mods in modules]
    ensemble.train()
    try:
        for k, (xb, _) in enumerate(split.batches(batch_size, device=ensemble.device)):
            if max_batches is not None and k >= max_batches:
                break
            for mods in modules:
                for m in mods:
                    m.momentum = 1.0 / (k + 1)
            ensemble(xb, params=params)
    finally:
        for mods, moms in zip(modules, saved):
            for m, mom in zip(mods, moms):
                m.momentum = mom
        ensemble.eval()
    return ensemble
