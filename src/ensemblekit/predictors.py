"""Predictor kinds: what a fitted method leaves, how its file is read back, what it exports.

Every method leaves its predictor in ``ensemble_`` with one surface (:class:`Predictor`:
``predict_proba(x) -> (M, N, C)``, ``num_members``, ``members_info``, ``num_parameters()``,
``save(path)``, ``export_module``) and saves it to ``ensemble.safetensors``. Each *kind*
(the stacked :class:`~ensemblekit.ensemble.Ensemble`, the one-network
:class:`~ensemblekit.efficient.shared.SharedEnsemble`, :class:`~ensemblekit.efficient.mcdropout.MCDropout`)
registers itself where it is defined (:func:`register_predictor`) under the family of its
file format (``ensemblekit.ensemble/1`` -> ``ensemblekit.ensemble``) and owns its ``save``,
its ``load`` (a classmethod) and its export (``export_module``, the plain module
:func:`ensemblekit.export.export` writes). :func:`load_predictor` reads a file's format
and hands the file to the kind registered for it. Loading runs no code the file names
(see :meth:`ensemblekit.ensemble.Ensemble.load`).

This module is part of the base layer: it imports only ``errors``, ``registry`` and
``serialization``; the kinds find it, it never imports them (:data:`PREDICTORS` discovers
them in the packages that hold kinds).
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence, TypeVar, runtime_checkable

import torch
from torch import nn

from .errors import DataError
from .registry import Registry
from .serialization import load_metadata

__all__ = ["Predictor", "PREDICTORS", "register_predictor", "format_family", "EnsembleModule", "load_predictor"]

K = TypeVar("K", bound=type)

PREDICTORS: Registry[type] = Registry("predictor kind", discover=("ensemblekit.ensemble", "ensemblekit.efficient"))
"""Predictor kinds by the family of their file format (``ensemblekit.ensemble``, ``ensemblekit.shared``...)."""


@runtime_checkable
class Predictor(Protocol):
    """What a fitted method's ``ensemble_`` offers: M members' probabilities, a file and an export."""

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

    def export_module(self, with_members: bool) -> nn.Module:
        """A plain module ``x -> mean probabilities`` (with ``with_members`` also ``(M, B, C)``)."""

    def __call__(self, x: torch.Tensor, per_member: bool = False, params: Any = None) -> torch.Tensor:
        """Logits ``(M, B, C)``."""


def format_family(fmt: Any) -> str | None:
    """The family of a file format: ``"ensemblekit.shared/1"`` -> ``"ensemblekit.shared"`` (``None``: not a format)."""
    if not isinstance(fmt, str) or "/" not in fmt:
        return None
    return fmt.split("/", 1)[0]


def register_predictor(cls: K) -> K:
    """Class decorator: register a predictor kind under the family of the ``file_format`` its body declares.

    The kind's ``load(path, factory=None, device="cpu", trust_factory=False)`` (a classmethod)
    reads every file of that family (and refuses versions it does not know).

    Example:
        >>> @register_predictor
        ... class MyKind:
        ...     file_format = "mypkg.kind/1"
    """
    family = format_family(cls.__dict__.get("file_format"))
    if family is None:
        raise TypeError(f"{cls.__name__} must declare file_format = '<family>/<version>' to be a predictor kind")
    return PREDICTORS.register(family)(cls)


class EnsembleModule(nn.Module):
    """``x -> mean_m softmax(f_m(x))`` (and the members' probabilities with ``with_members``).

    Args:
        members: one module per member (logits ``(B, C)`` each), or
        shared: one module giving every member's logits ``(M, B, C)`` at once.
        with_members: the forward returns ``(mean (B, C), members (M, B, C))``.
    """

    def __init__(self, members: Sequence[nn.Module] | None = None, shared: nn.Module | None = None, with_members: bool = False) -> None:
        super().__init__()
        self.members = nn.ModuleList(members or [])
        self.shared = shared
        self.with_members = with_members

    def forward(self, x: torch.Tensor) -> Any:
        if self.shared is not None:
            probs = torch.softmax(self.shared(x), dim=-1)  # (M, B, C) from one network
        else:
            probs = torch.stack([torch.softmax(m(x), dim=-1) for m in self.members])
        mean = probs.mean(0)
        return (mean, probs) if self.with_members else mean


def load_predictor(path: str, factory: Callable[[], nn.Module] | None = None, device: str | torch.device = "cpu",
                   trust_factory: bool = False) -> Any:
    """The predictor saved in ``path``, read by the kind registered for its file format.

    Raises:
        DataError: not a file ensemblekit wrote (or a format no kind reads).
    """
    meta = load_metadata(path)
    fmt = meta.get("format") if isinstance(meta, dict) else None
    family = format_family(fmt)
    if family is None or family not in PREDICTORS:
        raise DataError(f"{path}: not a predictor ensemblekit saved (format {fmt!r})")
    return PREDICTORS.get(family).load(path, factory=factory, device=device, trust_factory=trust_factory)
