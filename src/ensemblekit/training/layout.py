"""How the optimizer sees a model's tensors, and per-member gradient clipping.

By default the optimizer steps the model's own tensors: the stacked ``(M, ...)`` tensors
of every :class:`~ensemblekit.training.protocol.ParamGroup` in one parameter group (exactly
M independent optimizers, since every torch.optim rule is elementwise). When members need
*different* optimizer hyperparameters (``optimizer.per_member``, e.g. one learning rate per
member), each member's slices of the stacked groups become leaf tensors of their own, in
one parameter group per member (tensors shared by all members stay in a base group with
the base settings); they are stacked for the forward pass and written back to the model
after every step, so schedules, checkpoints and callbacks see one layout.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from ..errors import ConfigError
from .optim import clip_grad_norm_per_member
from .protocol import ParamGroup, TrainableModel, trainable_tensors

__all__ = ["ParamLayout", "per_member_hparams"]


def per_member_hparams(spec: Any, members: int) -> dict[str, list[Any]]:
    """``optimizer.per_member`` as ``{argument: [value per member]}`` (empty when absent)."""
    if not isinstance(spec, Mapping) or not spec.get("per_member"):
        return {}
    out = {}
    for key, values in dict(spec["per_member"]).items():
        if not isinstance(values, (list, tuple)) or len(values) != members:
            raise ConfigError(f"optimizer.per_member.{key} must list one value per member ({members}), got {values!r}")
        out[key] = list(values)
    return out


@torch.no_grad()
def _clip_stacked(groups: list[ParamGroup], max_norm: float, num_members: int) -> None:
    """Per-member clipping across stacked groups (a member's norm sums its slices of every group)."""
    if len(groups) == 1 or all(g.members.start >= h.members.stop or h.members.start >= g.members.stop  # type: ignore[union-attr]
                               for i, g in enumerate(groups) for h in groups[i + 1:]):
        for g in groups:  # disjoint groups (an Ensemble's member groups): each on its own
            clip_grad_norm_per_member(g.trainable(), max_norm, g.size)
        return
    sq = None
    for g in groups:  # overlapping groups (one network's per-member factors): sum per member first
        grads = [t.grad for t in g.trainable() if t.grad is not None]
        if not grads:
            continue
        part = torch.stack([gr.reshape(g.size, -1).float().pow(2).sum(1) for gr in grads]).sum(0)
        if sq is None:
            sq = torch.zeros(num_members, device=part.device)
        sq[g.members] += part
    if sq is None:
        return
    scale = (max_norm / (sq.sqrt() + 1e-6)).clamp(max=1.0)
    for g in groups:
        for t in g.trainable():
            if t.grad is not None:
                t.grad.mul_(scale[g.members].to(t.grad.dtype).reshape(g.size, *([1] * (t.grad.dim() - 1))))


class ParamLayout:
    """The tensors an optimizer steps for ``model``, and how they reach the forward pass.

    Args:
        model: a :class:`~ensemblekit.training.protocol.TrainableModel`.
        per_member: ``{optimizer argument: [one value per member]}`` (empty: one group).

    Raises:
        ConfigError: per-member settings for a model with no per-member tensors.
    """

    def __init__(self, model: TrainableModel, per_member: Mapping[str, list[Any]]) -> None:
        self.model = model
        self.groups = model.param_groups()
        self.per_member = dict(per_member)
        # [group] -> None (the group's own tensors) or [member] -> name -> leaf
        self.leaves: list[list[dict[str, torch.Tensor]] | None] | None = None
        if self.per_member:
            if not any(g.members is not None for g in self.groups):
                raise ConfigError(f"optimizer.per_member needs per-member parameters; every parameter of {type(model).__name__} is shared by its members")
            self.leaves = [
                None if g.members is None else
                [{k: v[i].detach().clone().requires_grad_(v.requires_grad) for k, v in g.params.items()} for i in range(g.size)]
                for g in self.groups
            ]

    def optimizer_params(self) -> list[torch.Tensor] | list[dict[str, Any]]:
        if self.leaves is None:
            if all(g.decay for g in self.groups):
                return trainable_tensors(self.groups)
            decayed = trainable_tensors([g for g in self.groups if g.decay])
            kept = trainable_tensors([g for g in self.groups if not g.decay])
            # "ek_decay": the engine's decoupled weight decay skips the group too
            return [group for group in ({"params": decayed}, {"params": kept, "weight_decay": 0.0, "ek_decay": False}) if group["params"]]
        by_member: dict[int, list[torch.Tensor]] = {}
        shared: list[torch.Tensor] = []
        for g, leaves in zip(self.groups, self.leaves):
            if leaves is None:
                shared += g.trainable()
                continue
            for i, member in enumerate(leaves):
                by_member.setdefault(g.members.start + i, []).extend(t for t in member.values() if t.requires_grad)  # type: ignore[union-attr]
        out: list[dict[str, Any]] = [{"params": ts, **{k: v[m] for k, v in self.per_member.items()}} for m, ts in sorted(by_member.items())]
        if shared:
            out.append({"params": shared})
        return out

    def forward_params(self) -> list[dict[str, torch.Tensor]] | None:
        """Per-group tensors to differentiate through (``None``: the model's own)."""
        if self.leaves is None:
            return None
        return [dict(g.params) if leaves is None else {k: torch.stack([m[k] for m in leaves]) for k in leaves[0]}
                for g, leaves in zip(self.groups, self.leaves)]

    @torch.no_grad()
    def sync_to_model(self) -> None:
        """Write the per-member leaves back into the model's stacked tensors (after a step)."""
        if self.leaves is None:
            return
        for g, leaves in zip(self.groups, self.leaves):
            if leaves is not None:
                for k, v in g.params.items():
                    v.copy_(torch.stack([m[k] for m in leaves]))

    @torch.no_grad()
    def refresh_from_model(self) -> None:
        """Copy the model's tensors into the per-member leaves (after loading a state)."""
        if self.leaves is None:
            return
        for g, leaves in zip(self.groups, self.leaves):
            for i, member in enumerate(leaves or []):
                for k, t in member.items():
                    t.copy_(g.params[k][i])

    @torch.no_grad()
    def clip(self, max_norm: float) -> None:
        """Clip each member's gradient to L2 norm ``max_norm``; shared tensors as one more group."""
        shared = [t for g in self.groups if g.members is None for t in g.trainable()]
        if shared:
            torch.nn.utils.clip_grad_norm_(shared, max_norm)
        if self.leaves is None:
            stacked = [g for g in self.groups if g.members is not None]
            if stacked:
                _clip_stacked(stacked, max_norm, self.model.num_members)
            return
        per: dict[int, list[torch.Tensor]] = {}
        for g, leaves in zip(self.groups, self.leaves):
            for i, member in enumerate(leaves or []):
                per.setdefault(g.members.start + i, []).extend(t for t in member.values() if t.requires_grad)  # type: ignore[union-attr]
        for tensors in per.values():
            torch.nn.utils.clip_grad_norm_(tensors, max_norm)

    def stepped(self) -> list[tuple[torch.Tensor, slice | int | None]]:
        """Every tensor the optimizer steps, with the members it belongs to: a ``slice``
        (a stacked tensor whose leading axis indexes those members), an ``int`` (a
        per-member leaf of that member) or ``None`` (shared by all members)."""
        out: list[tuple[torch.Tensor, slice | int | None]] = []
        for gi, g in enumerate(self.groups):
            leaves = None if self.leaves is None else self.leaves[gi]
            if leaves is None:
                out += [(t, g.members) for t in g.trainable()]
            else:
                out += [(t, g.members.start + i) for i, member in enumerate(leaves) for t in member.values() if t.requires_grad]  # type: ignore[union-attr]
        return out
