"""Loading any saved predictor: a stacked Ensemble, a shared-network ensemble, an MC-dropout network.

Every method leaves its predictor in ``ensemble_`` with one surface (``predict_proba(x) ->
(M, N, C)``, ``num_members``, ``members_info``, ``num_parameters()``, ``save(path)``) and
saves it to ``ensemble.safetensors``; :func:`load_predictor` reads any of those files back.
Loading runs no code the file names (see :meth:`ensemblekit.ensemble.Ensemble.load`).
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, runtime_checkable

import torch
from torch import nn

from .errors import DataError
from .serialization import load_tensors

__all__ = ["Predictor", "load_predictor"]


@runtime_checkable
class Predictor(Protocol):
    """What a fitted method's ``ensemble_`` offers: M members' probabilities and a file."""

    members_info: list[dict[str, Any]]

    @property
    def num_members(self) -> int: ...

    @property
    def device(self) -> torch.device: ...

    def predict_proba(self, x: Any, batch_size: int = 1024) -> torch.Tensor:
        """Per-member probabilities ``(M, N, C)`` (``x``: a tensor or a Split)."""

    def num_parameters(self) -> int:
        """Parameters needed to predict (shared ones counted once)."""

    def save(self, path: str) -> None:
        """Write a file :func:`load_predictor` reads back."""

    def __call__(self, x: torch.Tensor, per_member: bool = False, params: Any = None) -> torch.Tensor:
        """Logits ``(M, B, C)``."""


def load_predictor(path: str, factory: Callable[[], nn.Module] | None = None, device: str | torch.device = "cpu",
                   trust_factory: bool = False) -> Any:
    """The predictor saved in ``path`` (an Ensemble, a SharedEnsemble or an MCDropout).

    Raises:
        DataError: not a file ensemblekit wrote.
    """
    from .efficient.mcdropout import MC_FORMAT, MCDropout
    from .efficient.shared import SHARED_FORMAT, SharedEnsemble
    from .ensemble import Ensemble

    tensors, meta = load_tensors(path, device=device)
    fmt = meta.get("format") if isinstance(meta, dict) else None
    if fmt == SHARED_FORMAT:
        return SharedEnsemble.load(path, factory=factory, device=device, trust_factory=trust_factory)
    if fmt == MC_FORMAT:
        return MCDropout.load(path, factory=factory, device=device, trust_factory=trust_factory)
    if fmt is None or not str(fmt).startswith("ensemblekit.ensemble/"):
        raise DataError(f"{path}: not a predictor ensemblekit saved (format {fmt!r})")
    return Ensemble.from_saved(path, tensors, meta, factory, device, trust_factory)
