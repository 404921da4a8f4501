"""How the optimizer sees the members: one stacked tensor per parameter, or per-member tensors.

By default the optimizer steps the stacked ``(M, ...)`` tensors directly (one parameter
group; exactly M independent optimizers, since every torch.optim rule is elementwise).
When members need *different* optimizer hyperparameters (``optimizer.per_member``,
e.g. one learning rate per member), each member gets its own leaf tensors and its own
parameter group; they are stacked for the vectorised forward pass and written back to
the ensemble after every step, so schedules, checkpoints and callbacks see one layout.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from ..ensemble import Ensemble
from ..errors import ConfigError

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


class ParamLayout:
    """The tensors an optimizer steps for ``ensemble``, and how they reach the forward pass."""

    def __init__(self, ensemble: Ensemble, per_member: Mapping[str, list[Any]]) -> None:
        self.ensemble = ensemble
        self.per_member = dict(per_member)
        self.leaves: list[list[dict[str, torch.Tensor]]] | None = None  # [group][member] -> name -> tensor
        if self.per_member and not isinstance(ensemble, Ensemble):
            raise ConfigError("optimizer.per_member applies to ensembles of members only")
        if self.per_member:
            self.leaves = [
                [{k: v[m].detach().clone().requires_grad_(v.requires_grad) for k, v in g.params.items()} for m in range(g.num_members)]
                for g in ensemble.groups
            ]

    def optimizer_params(self) -> list[torch.Tensor] | list[dict[str, Any]]:
        if self.leaves is None:
            return self.ensemble.parameters()
        groups, m = [], 0
        for group_leaves in self.leaves:
            for member in group_leaves:
                groups.append({"params": [t for t in member.values() if t.requires_grad], **{k: v[m] for k, v in self.per_member.items()}})
                m += 1
        return groups

    def forward_params(self) -> list[dict[str, torch.Tensor]] | None:
        """Per-group stacked tensors to differentiate through (``None``: the ensemble's own)."""
        if self.leaves is None:
            return None
        return [{k: torch.stack([member[k] for member in group_leaves]) for k in group_leaves[0]} for group_leaves in self.leaves]

    @torch.no_grad()
    def sync_to_ensemble(self) -> None:
        if self.leaves is None:
            return
        for g, group_leaves in zip(self.ensemble.groups, self.leaves):
            for k, v in g.params.items():
                v.copy_(torch.stack([member[k] for member in group_leaves]))

    @torch.no_grad()
    def refresh_from_ensemble(self) -> None:
        if self.leaves is None:
            return
        for g, group_leaves in zip(self.ensemble.groups, self.leaves):
            for m, member in enumerate(group_leaves):
                for k, t in member.items():
                    t.copy_(g.params[k][m])

    @torch.no_grad()
    def clip(self, max_norm: float) -> None:
        """Clip each member's gradient to L2 norm ``max_norm``."""
        from .optim import clip_grad_norm_per_member

        if not isinstance(self.ensemble, Ensemble):  # another trainable model (a curve, a hypernetwork)
            torch.nn.utils.clip_grad_norm_(self.ensemble.parameters(), max_norm)
            return
        if self.leaves is None:
            for group in self.ensemble.groups:
                params = [p for p in group.params.values() if p.requires_grad]
                clip_grad_norm_per_member(params, max_norm, group.num_members)
            return
        for group_leaves in self.leaves:
            for member in group_leaves:
                torch.nn.utils.clip_grad_norm_([t for t in member.values() if t.requires_grad], max_norm)
