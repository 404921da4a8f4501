"""``train.member_chunk``: one training step over the member axis in chunks.

Members are independent, so the gradient of ``sum_m loss_m`` is the concatenation of each
member's own gradient: running the forward and backward pass for members ``[0, c)``, then
``[c, 2c)``, ... and letting the gradients accumulate into the stacked tensors (each chunk
reads views of them) gives the same numbers as one pass, with the activation memory of
``c`` members instead of ``M``. The inputs are augmented (and mixed) once per step, before
the chunks, so the random draws are those of the unchunked step; dropout masks are drawn
per chunk, so with dropout the chunked run is a different (equally valid) draw.

``auto`` runs the first step one member at a time while measuring it (the bytes autograd
saves for the backward pass, and on CUDA the allocator's peak), then takes the largest
chunk whose estimated memory fits in the device's free memory (CUDA: ``mem_get_info``;
CPU: ``MemAvailable`` of ``/proc/meminfo``), keeping a safety margin.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import torch

from ..data.batching import Batch
from ..errors import ConfigError
from .penalties import member_penalties

if TYPE_CHECKING:
    from .engine import Trainer

__all__ = ["check_execution", "check_member_chunk", "chunked_losses", "probe_member_chunk", "free_memory"]

_SAFETY = 0.5  # of the free memory an auto chunk may plan to use


def check_execution(config: Any, model: Any, stage: str) -> None:
    """``train.member_chunk``, ``train.devices`` and ``train.early_stopping`` against the model they
    would run: the first two need members that run apart (``supports_member_chunks`` / ``place``)
    and devices that exist, early stopping members with their own tensors (it restores each
    member's best weights). The methods call it before anything is written; the engine again
    when it starts."""
    from .engine import resolve_device
    from .protocol import shared_tensor_names

    for d in config.devices or []:
        resolve_device(d)
    name = type(model).__name__
    if getattr(config, "early_stopping", None) is not None:
        shared = shared_tensor_names(model)
        if shared:
            raise ConfigError(f"{stage}: early_stopping restores each member's own best weights, but {name} "
                              f"has tensors shared by its members ({shared[0]}, ...)")
    chunk = config.member_chunk
    if chunk is not None and not (isinstance(chunk, int) and chunk >= model.num_members):
        if not getattr(model, "supports_member_chunks", False):
            raise ConfigError(f"{stage}: train.member_chunk needs members that can run apart (independent networks); "
                              f"the members of {name} share parameters or a forward pass: remove member_chunk")
    if config.devices and getattr(model, "place", None) is None:
        raise ConfigError(f"{stage}: train.devices places members on several devices, but the members of "
                          f"{name} share parameters or a forward pass: use train.device")


def check_member_chunk(trainer: "Trainer", num_members: int) -> int | str | None:
    """The configured chunk, after checking that the model and loss can be chunked."""
    chunk = trainer.config.member_chunk
    if chunk is None or (isinstance(chunk, int) and chunk >= num_members):
        return None
    check_execution(trainer.config, trainer.model, trainer.stage)
    if not getattr(trainer.loss_fn, "member_wise", False):
        raise ConfigError(f"{trainer.stage}: train.member_chunk needs a loss computed member by member "
                          f"(the default cross-entropy); this stage's loss {getattr(trainer.loss_fn, '__name__', trainer.loss_fn)!r} "
                          "reads all members at once: remove member_chunk")
    return chunk


def _slice_batch(batch: Batch, sl: slice) -> Batch:
    if not batch.per_member:
        return batch
    return Batch(batch.x[sl], batch.y[sl], batch.idx[sl] if batch.idx is not None else None, batch.target_dims)


def chunked_losses(trainer: "Trainer", batch: Batch, lr: float, chunk: int) -> tuple[torch.Tensor, torch.Tensor, Batch]:
    """Forward and backward one step, ``chunk`` members at a time; returns the detached
    per-member losses ``(M,)``, logits ``(M, B, C)`` and the batch the losses used."""
    m = trainer.model.num_members
    batch, mix = trainer._inputs(batch)
    x = batch.x
    params = trainer.layout.forward_params()
    losses, logits, used = [], [], []
    for start in range(0, m, chunk):
        sl = slice(start, min(m, start + chunk))
        xs = x[sl] if batch.per_member else x
        part_mix = None
        if mix is not None:
            partner, lam = mix
            part_mix = (_slice_batch(partner, sl), lam[sl] if lam.dim() else lam)
        loss, out, b = trainer._member_losses(xs, _slice_batch(batch, sl), part_mix, params, members=sl)
        trainer._backward(loss, lr, first=start)
        losses.append(loss.detach())
        logits.append(out.detach())
        used.append(b)
    total = torch.cat(losses)
    if trainer.config.penalties.active:
        penalty = member_penalties(trainer.model, trainer.config.penalties, params)
        trainer._backward(penalty, lr)
        total = total + penalty.detach()
    first = used[0]
    if first.per_member:
        first = Batch(batch.x, torch.cat([b.y for b in used]), batch.idx, batch.target_dims)
    return total, torch.cat(logits), first


def free_memory(device: torch.device) -> int:
    """Bytes the device can still give (CUDA: free plus this process's cached blocks)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def probe_member_chunk(trainer: "Trainer", batch: Batch, lr: float) -> int:
    """Run this step one member at a time, measure one member's memory, return the chunk."""
    saved = [0]

    def pack(t: torch.Tensor) -> Any:
        saved[0] += t.numel() * t.element_size()
        return t

    device = trainer.device
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = chunked_losses(trainer, batch, lr, 1)
    m = trainer.model.num_members
    per_member = saved[0] / m
    if device.type == "cuda":
        per_member = max(per_member, (torch.cuda.max_memory_allocated(device) - base) / 1.0)
    chunk = m if per_member <= 0 else max(1, min(m, int(_SAFETY * free_memory(device) // per_member)))
    trainer._last_probe = out
    trainer.last_losses = out[0]
    return chunk
