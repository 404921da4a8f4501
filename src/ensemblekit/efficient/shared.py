"""Ensembles whose M members live in one network (BatchEnsemble, MIMO, Masksembles).

A :class:`MemberNet` is an ``nn.Module`` that maps a batch to per-member logits
``(M, B, C)`` and names its per-member parameters (their leading axis has length M); every
other parameter is shared by all members. :class:`SharedEnsemble` wraps one: it is a
:class:`~ensemblekit.training.protocol.TrainableModel` (the engine trains it like any
other, with per-member clipping, penalties and learning rates on the per-member tensors
and the shared ones handled once) and a predictor kind with the :class:`~ensemblekit.ensemble.Ensemble`
surface the results path uses (``predict_proba``, ``save``, ``load``, ``export_module``, ``num_parameters``...).

Member nets are built by registered *transformations* of an ordinary model
(:data:`TRANSFORMS`: ``batch_ensemble``, ``mimo``, ``masksembles``), so a saved one is
rebuilt from the base model's spec, the transformation's name and its options: loading
runs no code the file names (registered models only, as for an Ensemble). :data:`TRANSFORMS`
finds the transformations in this package (``discover``): nothing imports them for that.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn
from torch.func import functional_call

from ..data.dataset import Split
from ..ensemble.io import rebuild_template
from ..errors import ConfigError, DataError
from ..metrics.head_outputs import CLASSIFICATION, Readout
from ..predictors import EnsembleModule, register_predictor
from ..registry import Registry
from ..serialization import copy_state_, load_tensors, save_tensors
from ..training.protocol import ParamGroup

__all__ = ["MemberNet", "RepeatedBatchNet", "SharedEnsemble", "TRANSFORMS", "register_transform", "SHARED_FORMAT", "find_layers", "fold"]

SHARED_FORMAT = "ensemblekit.shared/1"

TRANSFORMS: Registry[Callable[..., "MemberNet"]] = Registry("ensemble transformation", discover=("ensemblekit.efficient",))


def register_transform(name: str) -> Callable[[Callable[..., "MemberNet"]], Callable[..., "MemberNet"]]:
    """Register ``fn(model, members, **options) -> MemberNet`` as a way to turn a model into M members."""
    return TRANSFORMS.register(name)


class MemberNet(nn.Module):
    """Base class: ``forward(x, per_member=False) -> (M, B, C)``; layers list their per-member
    parameters in a ``member_params`` attribute (names of their own parameters).

    Args:
        members: M.
    """

    def __init__(self, members: int) -> None:
        super().__init__()
        if not isinstance(members, int) or members < 1:
            raise ConfigError(f"members must be an integer >= 1, got {members!r}")
        self.members = members

    def member_parameter_names(self) -> set[str]:
        """Names (as in ``named_parameters``) of the tensors whose axis 0 indexes the members."""
        out = set()
        for prefix, module in self.named_modules():
            for name in getattr(module, "member_params", ()):
                if getattr(module, name, None) is not None:
                    out.add(f"{prefix}.{name}" if prefix else name)
        return out

    def undecayed_parameter_names(self) -> set[str]:
        """Parameters that weight decay skips (listed by layers in ``no_decay``)."""
        out = set()
        for prefix, module in self.named_modules():
            for name in getattr(module, "no_decay", ()):
                out.add(f"{prefix}.{name}" if prefix else name)
        return out


def fold(x: torch.Tensor, members: int, per_member: bool) -> torch.Tensor:
    """``(B, ...)`` repeated for every member, or ``(M, B, ...)``, as one member-major batch ``(M*B, ...)``."""
    if per_member:
        if x.shape[0] != members:
            raise DataError(f"per-member inputs need a leading axis of {members} members, got shape {tuple(x.shape)}")
        return x.reshape(members * x.shape[1], *x.shape[2:])
    return x.repeat(members, *([1] * (x.dim() - 1)))


class RepeatedBatchNet(MemberNet):
    """A network whose layers read a member-major batch ``(M·B, ...)``: the input is repeated
    once per member (or given per member) and the output viewed as ``(M, B, C)``
    (BatchEnsemble, Masksembles)."""

    def __init__(self, body: nn.Module, members: int) -> None:
        super().__init__(members)
        self.body = body

    def forward(self, x: torch.Tensor, per_member: bool = False) -> torch.Tensor:
        out = self.body(fold(x, self.members, per_member))
        return out.reshape(self.members, out.shape[0] // self.members, *out.shape[1:])


def find_layers(model: nn.Module, types: tuple[type[nn.Module], ...]) -> list[tuple[nn.Module, str, nn.Module]]:
    """``(parent, attribute, layer)`` of every module of exactly one of ``types``, in module order
    (the modules inside a found layer are not searched)."""
    found: list[tuple[nn.Module, str, nn.Module]] = []

    def visit(parent: nn.Module) -> None:
        for name, child in parent.named_children():
            if type(child) in types:
                found.append((parent, name, child))
            else:
                visit(child)

    visit(model)
    return found


@register_predictor
class SharedEnsemble:
    """M members in one :class:`MemberNet`: a trainable model and a predictor.

    Args:
        net: the member net.
        transform: the registered transformation that built it (kept to rebuild it on load).
        options: that transformation's options (JSON-able).
        spec: the base model's JSON spec (``None``: a plain callable; then it cannot be loaded from a file).
        members_info: one dict per member.
    """

    file_format = SHARED_FORMAT
    readout: Readout = CLASSIFICATION  # how the outputs read (regression: a Gaussian head, the data's scaling)

    def __init__(self, net: MemberNet, transform: str, options: Mapping[str, Any], spec: dict[str, Any] | None,
                 members_info: Sequence[dict[str, Any]] | None = None) -> None:
        self.net = net
        self.transform = transform
        self.options = dict(options)
        self.spec = spec
        self.members_info = [dict(m) for m in members_info] if members_info is not None else [{"member": i} for i in range(net.members)]
        self.training = False
        self.net.eval()

    # ----------------------------------------------------------------- the trainable-model protocol
    @property
    def num_members(self) -> int:
        return self.net.members

    def __len__(self) -> int:
        return self.num_members

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def param_groups(self) -> list[ParamGroup]:
        """Shared tensors (decayed or not) and the per-member tensors (decayed or not)."""
        member, undecayed = self.net.member_parameter_names(), self.net.undecayed_parameter_names()
        groups = []
        for name, members, decay in (("shared", None, True), ("shared_no_decay", None, False),
                                     ("members", slice(0, self.num_members), True), ("members_no_decay", slice(0, self.num_members), False)):
            params = OrderedDict((k, v) for k, v in self.net.named_parameters()
                                 if (k in member) == (members is not None) and (k not in undecayed) == decay)
            if params:
                groups.append(ParamGroup(name, params, members=members, decay=decay))
        return groups

    def __call__(self, x: torch.Tensor, per_member: bool = False, params: Sequence[Mapping[str, torch.Tensor]] | None = None) -> torch.Tensor:
        """Logits ``(M, B, C)``; ``params`` (one mapping per parameter group) replaces those tensors."""
        if params is None:
            return self.net(x, per_member)
        tensors = {k: v for group in params for k, v in group.items()}
        return functional_call(self.net, {**dict(self.net.named_buffers()), **tensors}, (x, per_member))

    forward = __call__

    def targets(self, y: torch.Tensor) -> torch.Tensor:
        """The labels of the examples the last training forward gave each member (MIMO re-pairs them)."""
        fn = getattr(self.net, "targets", None)
        return fn(y) if fn is not None else y

    def train(self, mode: bool = True) -> "SharedEnsemble":
        self.training = mode
        self.net.train(mode)
        return self

    def eval(self) -> "SharedEnsemble":
        return self.train(False)

    def to(self, device: torch.device | str) -> "SharedEnsemble":
        """A copy on ``device`` (new leaf tensors)."""
        out = SharedEnsemble(copy.deepcopy(self.net).to(device), self.transform, self.options, self.spec, self.members_info)
        out.readout = self.readout
        return out.train(self.training)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {**dict(self.net.named_parameters()), **dict(self.net.named_buffers())}

    def load_state_tensors(self, tensors: Mapping[str, torch.Tensor]) -> None:
        copy_state_(self.state_tensors(), tensors, "saved shared-ensemble state")

    def member_slices(self) -> dict[str, slice | None]:
        member = self.net.member_parameter_names()
        return {k: (slice(0, self.num_members) if k in member else None) for k in self.state_tensors()}

    # ----------------------------------------------------------------- the predictor surface
    def parameters(self) -> list[torch.Tensor]:
        return [p for p in self.net.parameters() if p.requires_grad]

    def num_parameters(self) -> int:
        """Parameters of the one network (shared ones counted once)."""
        return sum(p.numel() for p in self.net.parameters())

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Inference logits ``(M, B, C)``: one pass of the member net."""
        return self(x)

    def predict_proba(self, x: torch.Tensor | Split, batch_size: int = 1024) -> torch.Tensor:
        """Per-member probabilities ``(M, N, C)`` in eval mode."""
        from ..evaluation.forward import predictive

        return predictive(self, x, batch_size=batch_size, cpu=False).probs

    def predict(self, x: torch.Tensor | Split, batch_size: int = 1024) -> torch.Tensor:
        return self.predict_proba(x, batch_size).mean(0)

    def export_module(self, with_members: bool = False) -> nn.Module:
        """The member net itself (a copy, eval mode), its members' probabilities averaged:
        what :func:`ensemblekit.export.export` writes."""
        return EnsembleModule(shared=copy.deepcopy(self.net).eval(), with_members=with_members,
                              regression=self.readout.export_constants()).eval()

    def save(self, path: str) -> None:
        """Weights (safetensors) and how to rebuild the net (base spec, transformation, options)."""
        meta = {"format": SHARED_FORMAT, "transform": self.transform, "options": self.options, "spec": self.spec,
                "members": self.members_info, **({"readout": self.readout.state()} if self.readout.is_regression else {})}
        save_tensors(path, self.state_tensors(), meta)

    @classmethod
    def load(cls, path: str, factory: Callable[[], nn.Module] | None = None, device: str | torch.device = "cpu",
             trust_factory: bool = False) -> "SharedEnsemble":
        """Rebuild a saved shared ensemble (registered base models only unless ``factory`` / ``trust_factory``)."""
        tensors, meta = load_tensors(path, device=device)
        if not isinstance(meta, dict) or meta.get("format") != SHARED_FORMAT:
            raise DataError(f"{path}: not an ensemblekit shared-ensemble file")
        base = rebuild_template(path, 0, meta.get("spec"), factory, trust_factory)
        net = TRANSFORMS.get(str(meta.get("transform")))(base, **dict(meta.get("options") or {})).to(device)
        out = cls(net, str(meta["transform"]), meta.get("options") or {}, meta.get("spec"), meta.get("members"))
        out.load_state_tensors(tensors)
        out.readout = Readout.from_state(meta.get("readout"))
        return out

    def __repr__(self) -> str:
        base = self.spec.get("name") if self.spec else "model"
        return f"SharedEnsemble({self.transform}, {self.num_members} members of {base})"
