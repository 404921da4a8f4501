"""Weight penalties added to each member's loss: L2, L1, elastic net, weight elimination.

Each function takes one tensor of a member's weights and returns a scalar; on stacked
tensors :func:`member_penalties` applies the configured penalties to every member's
own weights and returns one value per member, shape ``(M,)``.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import torch

from ..errors import ConfigError
from .config import PenaltyConfig
from .protocol import TrainableModel

__all__ = ["l2_penalty", "l1_penalty", "elastic_net_penalty", "weight_elimination_penalty", "member_penalties", "check_penalties"]


def l2_penalty(w: torch.Tensor, strength: float) -> torch.Tensor:
    """``strength / 2 * sum(w^2)`` (gradient ``strength * w``)."""
    return 0.5 * strength * w.pow(2).sum()


def l1_penalty(w: torch.Tensor, strength: float) -> torch.Tensor:
    """``strength * sum(|w|)``."""
    return strength * w.abs().sum()


def elastic_net_penalty(w: torch.Tensor, strength: float, l1_ratio: float = 0.5) -> torch.Tensor:
    """``strength * (l1_ratio * sum|w| + (1 - l1_ratio) / 2 * sum w^2)`` (scikit-learn's convention)."""
    return strength * (l1_ratio * w.abs().sum() + 0.5 * (1.0 - l1_ratio) * w.pow(2).sum())


def weight_elimination_penalty(w: torch.Tensor, strength: float, w0: float = 1.0) -> torch.Tensor:
    """``strength * sum (w^2/w0^2) / (1 + w^2/w0^2)`` (Weigend et al. 1991): small weights are
    pushed to zero like L2, large ones cost at most ``strength`` each."""
    r = w.pow(2) / (w0 * w0)
    return strength * (r / (1.0 + r)).sum()


def _penalties_of(tensors: Iterable[torch.Tensor], cfg: PenaltyConfig, members: int) -> torch.Tensor:
    total = None
    for p in tensors:
        if cfg.apply_to == "weights" and p.dim() - 1 < 2:
            continue
        flat = p.reshape(members, -1)
        parts = []
        if cfg.l2:
            parts.append(0.5 * cfg.l2 * flat.pow(2).sum(1))
        if cfg.l1:
            parts.append(cfg.l1 * flat.abs().sum(1))
        if cfg.elastic_net and cfg.elastic_net["strength"]:
            s, r = cfg.elastic_net["strength"], cfg.elastic_net["l1_ratio"]
            parts.append(s * (r * flat.abs().sum(1) + 0.5 * (1 - r) * flat.pow(2).sum(1)))
        if cfg.weight_elimination and cfg.weight_elimination["strength"]:
            s, w0 = cfg.weight_elimination["strength"], cfg.weight_elimination["w0"]
            q = flat.pow(2) / (w0 * w0)
            parts.append(s * (q / (1 + q)).sum(1))
        for part in parts:
            total = part if total is None else total + part
    return total if total is not None else torch.zeros(members)


def check_penalties(model: TrainableModel, where: str = "train") -> None:
    """Raise a ConfigError when no parameter group of ``model`` takes ``train.penalties``."""
    if not any(g.regularized for g in model.param_groups()):
        raise ConfigError(f"{where}: train.penalties do not apply to {type(model).__name__}: it regularises its own parameters "
                          "(a curve's weight decay acts on phi(t), a hypernetwork's KL term on its family); remove train.penalties")


def member_penalties(model: TrainableModel, cfg: PenaltyConfig, params: Sequence[Mapping[str, torch.Tensor]] | None = None) -> torch.Tensor:
    """The configured penalties of every member, ``(M,)``, on the trainable parameters.

    Member m pays for its own slices of every stacked parameter group; tensors shared by all
    members are penalised once, the penalty split evenly over the M member losses (so their
    sum, which the engine minimises, counts it once, as for one network). Groups marked
    ``regularized=False`` are skipped.

    Args:
        model: a :class:`~ensemblekit.training.protocol.TrainableModel` (an Ensemble...).
        cfg: which penalties and their strengths.
        params: per-group parameter mappings to use instead of the model's own
            (the engine passes the tensors it differentiates).

    Raises:
        ConfigError: no parameter group of the model takes penalties.
    """
    groups = model.param_groups()
    check_penalties(model)
    m = model.num_members
    total: torch.Tensor | None = None
    for gi, group in enumerate(groups):
        if not group.regularized:
            continue
        tensors = params[gi] if params is not None else group.params
        trainable = [t for k, t in tensors.items() if group.params[k].requires_grad]
        if group.members is None:
            part = _penalties_of([t.unsqueeze(0) for t in trainable], cfg, 1).to(model.device).expand(m) / m
        else:
            part = _penalties_of(trainable, cfg, group.size).to(model.device)
            if group.size != m:
                part = torch.zeros(m, dtype=part.dtype, device=part.device).index_add(0, torch.arange(group.members.start, group.members.stop, device=part.device), part)
        total = part if total is None else total + part
    return total if total is not None else torch.zeros(m, device=model.device)
