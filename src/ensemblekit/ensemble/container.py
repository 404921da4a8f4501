"""The Ensemble container: M networks whose predictive distributions are averaged.

Members that share an architecture form a :class:`~ensemblekit.ensemble.group.MemberGroup`
(stacked parameters and buffers, one vectorised forward pass); members of different
architectures are kept as several groups (the list fallback), and the ensemble's output
concatenates the groups along the member axis. The Ensemble is a predictor kind
(:func:`~ensemblekit.predictors.register_predictor`): it owns its file (:meth:`Ensemble.save`,
:meth:`Ensemble.load`, the format in :mod:`ensemblekit.ensemble.io`) and its export
(:meth:`Ensemble.export_module`); what consumes it (evaluation, export, reports) lives above it.

An ensemble's prediction is the mean of member *probabilities*, never of logits.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn

from ..data.dataset import Split
from ..errors import ConfigError
from ..metrics.head_outputs import CLASSIFICATION, Readout
from ..predictors import EnsembleModule, register_predictor
from ..serialization import copy_state_, load_tensors, save_tensors
from ..training.protocol import ParamGroup
from .group import MemberGroup, state_key
from .io import ENSEMBLE_FORMAT, saved_groups

__all__ = ["Ensemble", "INFERENCE_ACTIVATION_BYTES"]

INFERENCE_ACTIVATION_BYTES = {"cpu": 4 * 2**20, "default": 256 * 2**20}
"""Activation memory that :meth:`Ensemble.predict_proba` lets one chunk of members use, per
device type. On CPU a chunk whose activations stay cache-sized is fastest (measured with
``benchmarks/predict_chunks.py``: 72 cnn1d members on 1000 examples take 0.85 s all at
once, 0.33-0.43 s in chunks of 1-4, 0.48 s in chunks of 8); elsewhere a larger chunk fills
the device."""


@register_predictor
class Ensemble:
    """M networks whose predictive distributions are averaged.

    Build one with :meth:`from_factory` (fresh members, one seed each) or
    :meth:`from_modules` (existing modules); training methods return one in ``ensemble_``.

    Example:
        >>> from ensemblekit.models import model_factory
        >>> ens = Ensemble.from_factory(model_factory("mlp", input_shape=(5,), num_classes=3), seeds=[0, 1, 2])
        >>> ens.predict_proba(torch.randn(4, 5)).shape
        torch.Size([3, 4, 3])
    """

    file_format = ENSEMBLE_FORMAT
    readout: Readout = CLASSIFICATION  # how the outputs read (regression: a Gaussian head, the data's scaling)

    def __init__(self, groups: Sequence[MemberGroup], members_info: Sequence[dict[str, Any]] | None = None) -> None:
        if not groups:
            raise ConfigError("an ensemble needs at least one member")
        self.groups = list(groups)
        n = sum(g.num_members for g in self.groups)
        self.members_info = [dict(m) for m in members_info] if members_info is not None else [{} for _ in range(n)]
        if len(self.members_info) != n:
            raise ConfigError(f"members_info has {len(self.members_info)} entries for {n} members")
        self.training = False
        self._activation_bytes: dict[tuple[Any, ...], int] = {}
        self.train(False)

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_factory(cls, factory: Callable[[], nn.Module], members: int | None = None, seeds: Sequence[int] | None = None) -> "Ensemble":
        """Fresh members, member ``m`` initialised under ``torch.manual_seed(seeds[m])``.

        Args:
            factory: zero-argument callable returning an ``nn.Module`` (or a ModelFactory,
                whose spec is kept so the ensemble can be reloaded from disk).
            members: M (default ``len(seeds)``); ``seeds`` default to ``0..M-1``.
            seeds: one initialisation seed per member.
        """
        if seeds is None:
            if members is None or members < 1:
                raise ConfigError(f"members must be >= 1, got {members}")
            seeds = list(range(members))
        elif members is not None and members != len(seeds):
            raise ConfigError(f"members={members} but {len(seeds)} seeds given")
        modules = []
        with torch.random.fork_rng(devices=[]):
            for s in seeds:
                torch.manual_seed(int(s))
                modules.append(factory())
        spec = getattr(factory, "spec", None)
        return cls.from_modules(modules, specs=[spec] * len(modules), members_info=[{"seed": int(s)} for s in seeds])

    @classmethod
    def from_modules(cls, modules: Sequence[nn.Module], specs: Sequence[dict[str, Any] | None] | None = None, members_info: Sequence[dict[str, Any]] | None = None) -> "Ensemble":
        """Stack existing modules; consecutive modules of one architecture share a group."""
        modules = list(modules)
        if not modules:
            raise ConfigError("an ensemble needs at least one member")
        specs = list(specs) if specs is not None else [None] * len(modules)
        groups: list[MemberGroup] = []
        run: list[int] = [0]
        for i in range(1, len(modules) + 1):
            if i < len(modules) and _same_architecture(modules[run[0]], modules[i]) and specs[i] == specs[run[0]]:
                run.append(i)
                continue
            groups.append(MemberGroup.from_modules([modules[j] for j in run], specs[run[0]]))
            run = [i]
        return cls(groups, members_info)

    @staticmethod
    def cat(ensembles: Iterable["Ensemble"]) -> "Ensemble":
        """Concatenate ensembles (e.g. collected snapshots); same-architecture neighbours merge."""
        groups: list[MemberGroup] = []
        info: list[dict[str, Any]] = []
        for ens in ensembles:
            for g in ens.groups:
                if groups and groups[-1].signature() == g.signature():
                    groups[-1] = MemberGroup.concat([groups[-1], g])
                else:
                    groups.append(g.select(range(g.num_members)))
            info.extend(ens.members_info)
        return Ensemble(groups, info)

    # ----------------------------------------------------------------- properties
    @property
    def num_members(self) -> int:
        return sum(g.num_members for g in self.groups)

    def __len__(self) -> int:
        return self.num_members

    @property
    def device(self) -> torch.device:
        return next(iter(self.groups[0].params.values())).device

    def _member_ranges(self) -> list[slice]:
        out, start = [], 0
        for g in self.groups:
            out.append(slice(start, start + g.num_members))
            start += g.num_members
        return out

    def param_groups(self) -> list[ParamGroup]:
        """One stacked :class:`~ensemblekit.training.protocol.ParamGroup` per member group
        (the trainable-model protocol): every member owns its slice of every tensor."""
        return [ParamGroup(f"group{gi}", g.params, members=sl) for gi, (g, sl) in enumerate(zip(self.groups, self._member_ranges()))]

    def member_slices(self) -> dict[str, slice | None]:
        """The members axis 0 of each state tensor indexes (never shared in an Ensemble)."""
        out: dict[str, slice | None] = {}
        for gi, (g, sl) in enumerate(zip(self.groups, self._member_ranges())):
            out.update({state_key(gi, "param", k): sl for k in g.params})
            out.update({state_key(gi, "buffer", k): sl for k in g.buffers})
        return out

    def parameters(self) -> list[torch.Tensor]:
        """Trainable stacked leaf tensors (what an optimizer steps)."""
        return [p for g in self.groups for p in g.params.values() if p.requires_grad]

    def named_parameters(self) -> list[tuple[str, torch.Tensor]]:
        return [(f"{gi}.{k}" if len(self.groups) > 1 else k, p) for gi, g in enumerate(self.groups) for k, p in g.params.items()]

    def num_parameters(self) -> int:
        """Parameters of all members together."""
        return sum(p.numel() for g in self.groups for p in g.params.values())

    def train(self, mode: bool = True) -> "Ensemble":
        self.training = mode
        for g in self.groups:
            g.template.train(mode)
        return self

    def eval(self) -> "Ensemble":
        return self.train(False)

    def to(self, device: torch.device | str) -> "Ensemble":
        """A copy on ``device`` (new leaf tensors: build optimizers after moving)."""
        out = Ensemble([g.to(device) for g in self.groups], self.members_info)
        out.readout = self.readout
        return out.train(self.training)

    # ----------------------------------------------------------------- forward
    def __call__(self, x: torch.Tensor, per_member: bool = False, params: Sequence[dict[str, torch.Tensor]] | None = None,
                 members: slice | None = None) -> torch.Tensor:
        """Logits ``(M, B, C)``; ``x`` is ``(B, ...)`` shared by all members or ``(M, B, ...)`` when ``per_member``.

        ``params`` (one dict per group) replaces the stacked parameters for this call
        (the training engine passes tensors it differentiates through). ``members`` (a
        contiguous slice, step 1) computes only those members: the engine's
        ``train.member_chunk`` runs a step in such chunks; with ``per_member`` ``x`` then
        holds only their inputs.
        """
        if members is None and len(self.groups) == 1:
            return self.groups[0].forward(x, per_member, params[0] if params is not None else None)
        lo, hi, step = (0, self.num_members, 1) if members is None else members.indices(self.num_members)
        if step != 1:
            raise ConfigError(f"members must be a contiguous slice, got {members}")
        outs, start = [], 0
        for gi, g in enumerate(self.groups):
            a, b = max(lo, start), min(hi, start + g.num_members)
            if a < b:
                xs = x[a - lo : b - lo] if per_member else x
                local = None if (a, b) == (start, start + g.num_members) else slice(a - start, b - start)
                dev = next(iter(g.params.values())).device
                out = g.forward(xs.to(dev, non_blocking=True), per_member, params[gi] if params is not None else None, local)
                outs.append(out.to(x.device, non_blocking=True))  # members on other devices (PlacedEnsemble)
            start += g.num_members
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=0)

    supports_member_chunks = True

    def place(self, devices: Sequence[torch.device | str]) -> "Ensemble":
        """The members sharded over ``devices``, one contiguous shard per device
        (:class:`~ensemblekit.ensemble.placement.PlacedEnsemble`; ``train.devices`` uses it)."""
        from .placement import PlacedEnsemble  # a subclass of Ensemble: imported when used

        return PlacedEnsemble(self, devices)

    forward = __call__

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor | Split, batch_size: int = 1024, member_chunk: int | str | None = "auto") -> torch.Tensor:
        """Per-member class probabilities ``(M, N, C)`` in eval mode (average over axis 0 for the ensemble).

        ``member_chunk`` members run at a time (stacked); ``"auto"`` keeps their
        activations under :data:`INFERENCE_ACTIVATION_BYTES` for the device, so the peak
        memory of a 72-member ensemble is that of a few members; ``None`` runs all at once.
        """
        from ..evaluation.forward import predictive

        return predictive(self, x, batch_size=batch_size, cpu=False, forward=lambda xb: self.logits(xb, member_chunk)).probs

    def logits(self, x: torch.Tensor, member_chunk: int | str | None = "auto") -> torch.Tensor:
        """Logits ``(M, B, C)`` computed ``member_chunk`` members at a time (see :meth:`predict_proba`)."""
        chunk = self.inference_chunk(x) if member_chunk == "auto" else member_chunk
        if chunk is not None and (not isinstance(chunk, int) or isinstance(chunk, bool) or chunk < 1):
            raise ConfigError(f"member_chunk must be an integer >= 1, 'auto' or None, got {member_chunk!r}")
        m = self.num_members
        if chunk is None or chunk >= m:
            return self(x)
        return torch.cat([self(x, members=slice(a, min(a + chunk, m))) for a in range(0, m, chunk)])

    @torch.no_grad()
    def inference_chunk(self, x: torch.Tensor) -> int:
        """How many members to run at once on the batch ``x`` in inference: as many as keep
        about ``3 x (largest layer output)`` per member and example within
        :data:`INFERENCE_ACTIVATION_BYTES` (measured once per input shape on member 0 of
        every group; at least one member)."""
        key = (tuple(x.shape[1:]), x.dtype)
        per = self._activation_bytes.get(key)
        if per is None:
            per = max(_largest_output_bytes(g, x[:1]) for g in self.groups)
            self._activation_bytes[key] = per
        budget = INFERENCE_ACTIVATION_BYTES.get(x.device.type, INFERENCE_ACTIVATION_BYTES["default"])
        return max(1, int(budget // max(3 * per * x.shape[0], 1)))

    def predict(self, x: torch.Tensor | Split, batch_size: int = 1024) -> torch.Tensor:
        """The ensemble's predictive distribution ``(N, C)``: the mean of member probabilities."""
        return self.predict_proba(x, batch_size).mean(0)

    # ----------------------------------------------------------------- members
    def _locate(self, i: int) -> tuple[MemberGroup, int]:
        if not -self.num_members <= i < self.num_members:
            raise IndexError(f"member {i} out of range for {self.num_members} members")
        i %= self.num_members
        for g in self.groups:
            if i < g.num_members:
                return g, i
            i -= g.num_members
        raise AssertionError("unreachable")

    def member(self, i: int) -> nn.Module:
        """Member ``i`` as an independent ``nn.Module`` (a copy)."""
        g, j = self._locate(i)
        module = copy.deepcopy(g.template)
        module.load_state_dict({k: v.detach().clone() for k, v in g.member_state(j).items()}, strict=False)
        return module

    def to_modules(self) -> list[nn.Module]:
        return [self.member(i) for i in range(self.num_members)]

    def subset(self, indices: Sequence[int]) -> "Ensemble":
        """A new ensemble of the chosen members (copies), in the given order."""
        return Ensemble.cat(
            Ensemble([g.select([j])], [self.members_info[i]]) for i in indices for g, j in [self._locate(int(i))]
        )

    def clone(self) -> "Ensemble":
        out = Ensemble([g.select(range(g.num_members)) for g in self.groups], self.members_info)
        out.readout = self.readout
        return out.train(self.training)

    # ----------------------------------------------------------------- save / load
    def state_tensors(self, buffers: bool = True) -> dict[str, torch.Tensor]:
        """Every stacked tensor by its :func:`state_key` (parameters only with ``buffers=False``)."""
        out: dict[str, torch.Tensor] = {}
        for gi, g in enumerate(self.groups):
            out.update({state_key(gi, "param", k): v for k, v in g.params.items()})
            if buffers:
                out.update({state_key(gi, "buffer", k): v for k, v in g.buffers.items()})
        return out

    def metadata(self) -> dict[str, Any]:
        return {
            "format": ENSEMBLE_FORMAT,
            "groups": [
                {"members": g.num_members, "spec": g.spec, "frozen": [k for k, v in g.params.items() if not v.requires_grad]}
                for g in self.groups
            ],
            "members": self.members_info,
            **({"readout": self.readout.state()} if self.readout.is_regression else {}),
        }

    def save(self, path: str) -> None:
        """Save weights (safetensors) and metadata (JSON inside the file), atomically."""
        save_tensors(path, self.state_tensors(), self.metadata())

    def export_module(self, with_members: bool = False) -> nn.Module:
        """The members as plain modules on CPU in eval mode (BatchNorm with its running
        statistics), averaged: what :func:`ensemblekit.export.export` writes."""
        return EnsembleModule([m.eval() for m in self.to("cpu").to_modules()], with_members=with_members,
                              regression=self.readout.export_constants()).eval()

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Copy saved tensors into this ensemble's tensors in place (shapes must match)."""
        copy_state_(self.state_tensors(), tensors)

    @classmethod
    def load(cls, path: str, factory: Callable[[], nn.Module] | Sequence[Callable[[], nn.Module]] | None = None,
             device: str | torch.device = "cpu", trust_factory: bool = False) -> "Ensemble":
        """Load a saved ensemble. Never unpickles, and never runs code the file names.

        Members of registered models (and registered wrappers) are rebuilt from their saved
        spec. Members built by a user's function are rebuilt by the caller's ``factory``; a
        file whose metadata names a factory path (``pkg.mod:make_net``) is refused unless
        ``trust_factory=True`` (importing and calling it would run whatever the file says,
        e.g. ``os:system``).

        Args:
            path: a file written by :meth:`save`.
            factory: zero-argument callable(s) building the members of groups saved from a user
                function (a plain callable or a factory path); one per group or one for all.
            device: where the tensors go.
            trust_factory: import and call the factory path stored in the file.

        Raises:
            DataError: not an ensemble file, or tensors missing / of the wrong shape.
            ConfigError: a group needs ``factory=`` (or ``trust_factory=True``).
        """
        tensors, meta = load_tensors(path, device=device)
        return cls.from_saved(path, tensors, meta, factory, device, trust_factory)

    @classmethod
    def from_saved(cls, path: str, tensors: dict[str, torch.Tensor], meta: Any,
                   factory: Callable[[], nn.Module] | Sequence[Callable[[], nn.Module]] | None = None,
                   device: str | torch.device = "cpu", trust_factory: bool = False) -> "Ensemble":
        """An ensemble from tensors and metadata already read from ``path`` (see :meth:`load`)."""
        groups, members_info = saved_groups(path, tensors, meta, factory, device, trust_factory)
        out = cls(groups, members_info)
        out.readout = Readout.from_state(meta.get("readout"))
        return out

    def __repr__(self) -> str:
        kinds = ", ".join(f"{g.num_members} x {g.spec['name'] if g.spec and 'name' in g.spec else type(g.template).__name__}" for g in self.groups)
        return f"Ensemble({kinds})"


@torch.no_grad()
def _largest_output_bytes(group: MemberGroup, x1: torch.Tensor) -> int:
    """Bytes of the largest output of any layer of ``group``'s member 0 on one example."""
    largest = [x1.numel() * x1.element_size()]

    def hook(module: nn.Module, inputs: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor):
            largest.append(output.numel() * output.element_size())

    handles = [m.register_forward_hook(hook) for m in group.template.modules()]
    try:
        dev = next(iter(group.params.values())).device
        group._call({k: v[0] for k, v in group.params.items()}, {k: v[0] for k, v in group.buffers.items()}, x1.to(dev))
    finally:
        for h in handles:
            h.remove()
    return max(largest)


def _same_architecture(a: nn.Module, b: nn.Module) -> bool:
    if type(a) is not type(b) or repr(a) != repr(b):
        return False
    sa = [(k, v.shape, v.dtype) for k, v in [*a.named_parameters(), *a.named_buffers()]]
    sb = [(k, v.shape, v.dtype) for k, v in [*b.named_parameters(), *b.named_buffers()]]
    return sa == sb
