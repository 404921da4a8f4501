"""Mini-batches by index slicing of in-memory tensors, with per-member data orders.

The order of every epoch is a pure function of ``(seed, epoch)``, so a resumed run
sees exactly the batches an uninterrupted run would have seen, with no generator
state to save.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import torch
from torch.utils.data import DataLoader

from ..errors import ConfigError

__all__ = ["Batch", "TensorBatcher", "LoaderBatcher", "DATA_ORDERS", "steps_per_epoch"]

DATA_ORDERS = ("shared", "per_member", "bootstrap")


@dataclass
class Batch:
    """A mini-batch.

    Attributes:
        x: ``(B, *input_shape)`` when members share the batch, else ``(M, B, *input_shape)``.
        y: ``(B, *target_shape)`` or ``(M, B, *target_shape)`` targets: class indices
            (``target_shape`` is ``()``), or regression targets (``()`` or ``(D,)``).
        idx: indices of the examples in the training split (``(B,)`` or ``(M, B)``), or
            ``None`` for a DataLoader; methods use it to look up per-example state.
        target_dims: ``len(target_shape)``: 1 for regression targets ``(N, D)``, else 0.
    """

    x: torch.Tensor
    y: torch.Tensor
    idx: torch.Tensor | None
    target_dims: int = 0

    @property
    def per_member(self) -> bool:
        return self.y.dim() - self.target_dims == 2


def steps_per_epoch(split, batch_size: int, drop_last: bool = False) -> int:  # noqa: ANN001
    """Iterations per epoch the engine will run on ``split`` (a Split) with ``batch_size``."""
    if not split.in_memory:
        return len(split.loader)
    n = len(split)
    b = min(int(batch_size), n)
    f = math.floor if drop_last else math.ceil
    return max(1, int(f(n / b)))


def _mix(seed: int, epoch: int, salt: int) -> int:
    # Distinct, reproducible generator seeds per (seed, epoch, purpose).
    return (int(seed) * 1_000_003 + int(epoch) * 7_919 + salt) % (2**62)


class TensorBatcher:
    """Index-slicing batches over tensors, for M members at once.

    Args:
        x, y: the training split (moved to ``device`` once).
        batch_size: examples per member per step (>= 1).
        members: M.
        order: ``shared`` (one shuffled order for all members: cheapest), ``per_member``
            (each member its own shuffled order) or ``bootstrap`` (each member a fixed
            bootstrap resample of the data, drawn from ``seed``, reshuffled every epoch:
            bagging).
        seed: seed of every order.
        drop_last: drop the last incomplete batch.
        device: where batches live.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        batch_size: int,
        members: int = 1,
        order: str = "shared",
        seed: int = 0,
        drop_last: bool = False,
        device: torch.device | str | None = None,
    ) -> None:
        if order not in DATA_ORDERS:
            raise ConfigError(f"data_order must be one of {', '.join(DATA_ORDERS)}, got {order!r}")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.x = x.to(device) if device is not None else x
        self.y = y.to(device) if device is not None else y
        self.n = int(x.shape[0])
        self._target_dims = int(y.dim()) - 1  # (N, D) regression targets: one trailing target axis
        self.batch_size = min(int(batch_size), self.n)
        self.members = int(members)
        self.order = order
        self.seed = int(seed)
        self.drop_last = drop_last
        self._bootstrap: torch.Tensor | None = None
        if order == "bootstrap":
            g = torch.Generator().manual_seed(_mix(self.seed, -1, 17))
            self._bootstrap = torch.randint(0, self.n, (self.members, self.n), generator=g)

    @property
    def steps_per_epoch(self) -> int:
        f = math.floor if self.drop_last else math.ceil
        return max(1, int(f(self.n / self.batch_size)))

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """Example indices of one epoch: ``(N,)`` for shared order, else ``(M, N)``."""
        g = torch.Generator().manual_seed(_mix(self.seed, epoch, 1))
        if self.order == "shared":
            return torch.randperm(self.n, generator=g)
        keys = torch.rand(self.members, self.n, generator=g)
        perm = keys.argsort(dim=1)
        if self._bootstrap is not None:
            return torch.gather(self._bootstrap, 1, perm)
        return perm

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[Batch]:
        """Batches of ``epoch``, skipping the first ``start_step`` (for resuming mid-epoch)."""
        order = self.epoch_order(epoch).to(self.x.device)
        for step in range(start_step, self.steps_per_epoch):
            lo = step * self.batch_size
            idx = order[..., lo : lo + self.batch_size]
            yield Batch(self.x[idx], self.y[idx], idx, self._target_dims)


class LoaderBatcher:
    """Batches from a user's DataLoader; every member sees the same batch.

    The loader's own shuffling decides the order, so a resumed run matches an
    uninterrupted one only if the loader is deterministic per epoch. Targets become int64
    class indices, or float32 when ``task`` is ``"regression"``.
    """

    order = "shared"

    def __init__(self, loader: DataLoader, *, device: torch.device | str | None = None, task: str = "classification") -> None:
        if task not in ("classification", "regression"):
            raise ConfigError(f"task must be classification or regression, got {task!r}")
        self.loader = loader
        self.device = device
        self.task = task

    @property
    def steps_per_epoch(self) -> int:
        return len(self.loader)

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[Batch]:
        for step, (xb, yb) in enumerate(self.loader):
            if step < start_step:
                continue
            yb = torch.as_tensor(yb)
            xb, yb = torch.as_tensor(xb).float(), (yb.float() if self.task == "regression" else yb.long())
            if self.device is not None:
                xb, yb = xb.to(self.device), yb.to(self.device)
            yield Batch(xb, yb, None, max(0, yb.dim() - 1) if self.task == "regression" else 0)
