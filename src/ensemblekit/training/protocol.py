"""What the training engine needs from a model: the trainable-model protocol.

The :class:`~ensemblekit.training.engine.Trainer` trains anything that follows
:class:`TrainableModel`: the stacked :class:`~ensemblekit.ensemble.Ensemble` (M full copies
of one network per group), a mode-connecting :class:`~ensemblekit.curves.CurveModel` (one
member whose free bends are trained), a variational
:class:`~ensemblekit.varhyper.HyperModel` (K sampled complexities per step), or one network
whose M members share parameters (a trunk with M heads, rank-1 factors on shared weights).
No part of the engine asks which of these it holds.

**Members and parameters.** ``__call__`` returns per-member logits ``(M, B, C)``. The
trainable tensors come in :class:`ParamGroup` s, each of which says how its tensors map to
members: ``members`` is the slice of member indices that the leading axis of every tensor in
the group runs over (a stacked group: tensor ``t`` has shape ``(len(slice), ...)`` and
``t[i]`` belongs to member ``slice.start + i`` alone), or ``None`` when the tensors are
shared by every member. The engine's per-member features follow from that one description:

- **per-member gradient clipping** (``train.grad_clip``): member m's norm is taken over its
  own slices of every stacked group and each member is clipped on its own; the shared
  tensors form one more group, clipped by their own norm (what clipping one network would
  do). A model with only shared tensors is clipped as one network.
- **penalties** (``train.penalties``): member m pays for its own slices; the shared
  tensors are penalised once, as one network would be (their penalty is split evenly over
  the M member losses, whose sum the engine minimises). Groups with ``regularized=False``
  (a curve's bends, whose decay acts on the point ``phi(t)``) are never penalised.
- **per-member optimizer settings** (``optimizer.per_member``): each member's slices get
  their own parameter group; shared tensors stay in the base group.
- **early stopping** restores each member's best state from :meth:`member_slices`, so it
  needs a model without shared state.

**Device moves** have one meaning: ``to(device)`` returns a new model whose tensors are
new leaves on ``device``; the original is left unchanged (build optimizers after moving).

Example:
    >>> from ensemblekit.training.protocol import TrainableModel, check_trainable
    >>> check_trainable(ensemble)            # raises ConfigError naming what is missing
    >>> isinstance(ensemble, TrainableModel)
    True
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

import torch

from ..errors import ConfigError

__all__ = ["ParamGroup", "TrainableModel", "check_trainable", "trainable_tensors", "shared_tensor_names"]


@dataclass
class ParamGroup:
    """Trainable tensors of a model and the members they belong to.

    Attributes:
        name: a label for messages (``"group0"``, ``"bends"``, ``"hypernetwork"``).
        params: name -> leaf tensor; tensors with ``requires_grad=False`` are kept (they
            take part in the forward pass) but never stepped.
        members: the members that axis 0 of every tensor indexes (``slice(0, 5)`` for a
            group of five stacked copies), or ``None``: the tensors are shared by all members.
        regularized: whether ``train.penalties`` apply to these tensors.
        decay: whether weight decay (the optimizer's and ``train.weight_decay``) applies to
            them (BatchEnsemble's rank-1 factors may be excluded).
    """

    name: str
    params: "OrderedDict[str, torch.Tensor]"
    members: slice | None = None
    regularized: bool = True
    decay: bool = True

    @property
    def size(self) -> int:
        """How many members the leading axis covers (0 for a shared group)."""
        return 0 if self.members is None else self.members.stop - self.members.start

    def trainable(self) -> list[torch.Tensor]:
        return [t for t in self.params.values() if t.requires_grad]


@runtime_checkable
class TrainableModel(Protocol):
    """The surface the engine trains; see the module docstring for what each part means."""

    training: bool

    @property
    def num_members(self) -> int:
        """M: the length of axis 0 of the logits."""

    @property
    def device(self) -> torch.device:
        """Where the tensors are."""

    def param_groups(self) -> list[ParamGroup]:
        """The trainable tensors, grouped by how they map to members (a stable order)."""

    def __call__(self, x: torch.Tensor, per_member: bool = False, params: Sequence[Mapping[str, torch.Tensor]] | None = None) -> torch.Tensor:
        """Logits ``(M, B, C)``. ``x`` is ``(B, ...)`` for all members or ``(M, B, ...)`` with
        ``per_member``; ``params`` (one mapping per entry of :meth:`param_groups`) replaces
        those tensors for this call (a model that cannot take them raises ConfigError)."""

    def train(self, mode: bool = True) -> "TrainableModel": ...

    def eval(self) -> "TrainableModel": ...

    def to(self, device: torch.device | str) -> "TrainableModel":
        """A new model on ``device`` (new leaf tensors); ``self`` is unchanged."""

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor a checkpoint must hold (parameters and buffers), by stable names."""

    def load_state_tensors(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Copy saved tensors into :meth:`state_tensors` in place (a mismatch is a DataError)."""

    def member_slices(self) -> dict[str, slice | None]:
        """For each name of :meth:`state_tensors`: the members its axis 0 indexes, or None (shared)."""

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Inference logits ``(M, B, C)`` of a batch (called in eval mode, without gradients, by
        :func:`ensemblekit.evaluation.forward.predictive`: validation and every evaluation). Most
        models return ``self(x)``; a curve returns its point at ``eval_t``, a stacked ensemble
        runs a few members at a time."""

    # Optional: ``targets(y) -> y``, the labels of the examples the last training forward used,
    # for a model that re-pairs or repeats its inputs (MIMO); the engine scores the logits
    # against them instead of the batch's labels.


_REQUIRED = ("num_members", "device", "param_groups", "train", "eval", "to", "state_tensors", "load_state_tensors",
             "member_slices", "logits")


def check_trainable(model: Any) -> None:
    """Raise a ConfigError naming what ``model`` lacks of :class:`TrainableModel`."""
    missing = [name for name in _REQUIRED if not hasattr(model, name)]
    if missing or not callable(model):
        missing += [] if callable(model) else ["__call__"]
        raise ConfigError(f"{type(model).__name__} cannot be trained by the engine: it lacks {', '.join(missing)} "
                          "(see ensemblekit.training.protocol.TrainableModel)")


def trainable_tensors(groups: Sequence[ParamGroup]) -> list[torch.Tensor]:
    """Every tensor an optimizer steps, in group order."""
    return [t for g in groups for t in g.trainable()]


def shared_tensor_names(model: TrainableModel) -> list[str]:
    """Names of the state tensors shared by every member (empty for M independent copies)."""
    return [k for k, s in model.member_slices().items() if s is None]
