"""Members on several devices: ``train.devices: [cuda:0, cuda:1, ...]``.

Members are independent, so an ensemble can be split by members across devices with no
gradient all-reduce: :class:`PlacedEnsemble` cuts the member axis into one contiguous
shard per device (as even as possible) and keeps each shard's stacked tensors on its
device. A forward pass sends the input to every shard and gathers the logits on the first
device, where the loss is computed; autograd carries each member's gradient back to its own
device and the optimizer steps every shard where it lives (torch's optimizers group
tensors by device). CUDA launches are asynchronous, so the shards compute concurrently.

What the outside sees keeps the unplaced layout: :meth:`PlacedEnsemble.state_tensors`
gathers the shards into the original groups' tensors (on the first device), so checkpoints,
callbacks (FGE, SWA, SWAG collection, early stopping) and saved files are those of one
device; :meth:`PlacedEnsemble.merged` gives back a plain :class:`Ensemble` after training.
The same code runs with ``devices: [cpu, cpu]`` (``tests/training/test_precision.py`` checks that it
equals one device).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from ..errors import ConfigError
from ..serialization import copy_state_
from .container import Ensemble
from .group import MemberGroup, state_key

__all__ = ["PlacedEnsemble", "split_members"]


def split_members(num_members: int, num_devices: int) -> list[slice]:
    """Contiguous, near-equal member ranges, one per device (never an empty one)."""
    k = min(num_members, num_devices)
    base, extra = divmod(num_members, k)
    out, start = [], 0
    for d in range(k):
        n = base + (1 if d < extra else 0)
        out.append(slice(start, start + n))
        start += n
    return out


class PlacedEnsemble(Ensemble):
    """An :class:`Ensemble` whose members are sharded across ``devices`` (see the module docstring)."""

    def __init__(self, base: Ensemble, devices: Sequence[torch.device | str]) -> None:
        if not devices:
            raise ConfigError("devices must list at least one device")
        self.devices = [torch.device(d) for d in devices]
        ranges = split_members(base.num_members, len(self.devices))
        shards: list[MemberGroup] = []
        self._origin: list[int] = []  # shard -> index of the base group it came from
        self._base_sizes = [g.num_members for g in base.groups]
        start = 0
        for gi, g in enumerate(base.groups):
            for sl, dev in zip(ranges, self.devices):
                a, b = max(sl.start, start), min(sl.stop, start + g.num_members)
                if a < b:
                    shards.append(g.select(range(a - start, b - start)).to(dev))
                    self._origin.append(gi)
            start += g.num_members
        super().__init__(shards, base.members_info)
        self.train(base.training)

    @property
    def device(self) -> torch.device:
        return self.devices[0]

    def _by_base(self) -> list[list[MemberGroup]]:
        out: list[list[MemberGroup]] = [[] for _ in self._base_sizes]
        for gi, g in zip(self._origin, self.groups):
            out[gi].append(g)
        return out

    def state_tensors(self, buffers: bool = True) -> dict[str, torch.Tensor]:
        """The base layout's tensors, gathered on the first device (copies, not views)."""
        out: dict[str, torch.Tensor] = {}
        for gi, shards in enumerate(self._by_base()):
            for k in shards[0].params:
                out[state_key(gi, "param", k)] = torch.cat([s.params[k].detach().to(self.device) for s in shards])
            if buffers:
                for k in shards[0].buffers:
                    out[state_key(gi, "buffer", k)] = torch.cat([s.buffers[k].to(self.device) for s in shards])
        return out

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        copy_state_(self.state_tensors(), tensors)  # checks names and shapes against the base layout
        with torch.no_grad():
            for gi, shards in enumerate(self._by_base()):
                start = 0
                for s in shards:
                    n = s.num_members
                    for k, v in s.params.items():
                        v.copy_(tensors[state_key(gi, "param", k)][start:start + n])
                    for k, v in s.buffers.items():
                        v.copy_(tensors[state_key(gi, "buffer", k)][start:start + n])
                    start += n

    def member_slices(self) -> dict[str, slice | None]:
        out: dict[str, slice | None] = {}
        start = 0
        for gi, (shards, size) in enumerate(zip(self._by_base(), self._base_sizes)):
            sl = slice(start, start + size)
            out.update({state_key(gi, "param", k): sl for k in shards[0].params})
            out.update({state_key(gi, "buffer", k): sl for k in shards[0].buffers})
            start += size
        return out

    def metadata(self) -> dict[str, Any]:
        return self.merged().metadata()

    def merged(self, device: torch.device | str | None = None) -> Ensemble:
        """A plain :class:`Ensemble` with the base layout, on ``device`` (default: the first)."""
        dev = torch.device(device) if device is not None else self.device
        groups = [MemberGroup.concat([s.to(dev) for s in shards]) for shards in self._by_base()]
        out = Ensemble(groups, self.members_info)
        out.readout = self.readout
        return out.train(self.training)

    def save(self, path: str) -> None:
        self.merged().save(path)

    def to(self, device: torch.device | str) -> Ensemble:
        return self.merged(device)

    def clone(self) -> Ensemble:
        return self.merged()

    def __repr__(self) -> str:
        return f"PlacedEnsemble({self.num_members} members on {', '.join(map(str, self.devices))})"
