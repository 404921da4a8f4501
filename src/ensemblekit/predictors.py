"""Predictor kinds: what a fitted method leaves, how its file is read back, what it exports.

Every method leaves its predictor in ``ensemble_`` with one surface (:class:`Predictor`:
inference ``logits(x) -> (M, N, K)``, ``readout`` (how those outputs read: class logits, or a
regression head with the data's standardisation, :class:`ensemblekit.metrics.head_outputs.Readout`),
``predict_proba(x) -> (M, N, C)`` for a classifier, ``num_members``, ``members_info``,
``num_parameters()``, ``save(path)``, ``export_module``) and saves it to ``ensemble.safetensors``. Each *kind*
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

PREDICTORS: Registry[type] = Registry("predictor kind", discover=("ensemblekit.ensemble", "ensemblekit.efficient", "ensemblekit.laplace", "ensemblekit.distance", "ensemblekit.distill"))
"""Predictor kinds by the family of their file format (``ensemblekit.ensemble``, ``ensemblekit.shared``...)."""


@runtime_checkable
class Predictor(Protocol):
    """What a fitted method's ``ensemble_`` offers: M members' probabilities, a file and an export."""

    members_info: list[dict[str, Any]]
    readout: Any  # metrics.head_outputs.Readout: saved in the file's metadata for regression

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

    For a regression predictor (``regression``: the constants of its readout,
    :meth:`ensemblekit.metrics.head_outputs.Readout.export_constants`) the module standardises
    the inputs, reads each member's Gaussian (means, then ``softplus(raw) + min_var``, or a
    means-only head's fitted noise variance), maps it back to the targets' units and returns the
    mixture's mean and total variance ``(B[, D])`` (aleatoric + epistemic); with ``with_members``
    also the members' means and variances ``(M, B[, D])``.

    Args:
        members: one module per member (logits ``(B, C)`` each), or
        shared: one module giving every member's logits ``(M, B, C)`` at once.
        with_members: the forward returns ``(mean (B, C), members (M, B, C))``.
        regression: the readout's constants (``None``: a classifier).
    """

    def __init__(self, members: Sequence[nn.Module] | None = None, shared: nn.Module | None = None, with_members: bool = False,
                 regression: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.members = nn.ModuleList(members or [])
        self.shared = shared
        self.with_members = with_members
        self.regression = regression is not None
        self.output_names = (["mean", "var", "member_mean", "member_var"] if self.regression else ["probs", "member_probs"])[
            : 4 if self.regression and with_members else 2 if with_members or self.regression else 1]
        if regression is not None:
            self.num_outputs, self.min_var = int(regression["num_outputs"]), float(regression["min_var"])
            for name in ("x_mean", "x_std", "y_mean", "y_std", "noise_var"):
                value = regression.get(name)
                self.register_buffer(name, None if value is None else torch.as_tensor(value, dtype=torch.float32))

    def _outputs(self, x: torch.Tensor) -> torch.Tensor:
        if self.shared is not None:
            return self.shared(x)  # (M, B, K) from one network
        return torch.stack([m(x) for m in self.members])

    def forward(self, x: torch.Tensor) -> Any:
        if self.regression:
            return self._gaussian(x)
        probs = torch.softmax(self._outputs(x), dim=-1)
        mean = probs.mean(0)
        return (mean, probs) if self.with_members else mean

    def _gaussian(self, x: torch.Tensor) -> Any:
        if self.x_mean is not None:
            x = (x - self.x_mean) / self.x_std
        z = self._outputs(x)
        d = self.num_outputs
        if z.shape[-1] == 2 * d:
            mu, var = z[..., :d], torch.nn.functional.softplus(z[..., d:]) + self.min_var
        else:
            mu = z
            var = (self.noise_var if self.noise_var is not None else torch.full((d,), self.min_var)).clamp_min(self.min_var).expand_as(mu)
        if self.y_mean is not None:
            mu, var = mu * self.y_std.reshape(-1) + self.y_mean.reshape(-1), var * self.y_std.reshape(-1) ** 2
        if d == 1:
            mu, var = mu.squeeze(-1), var.squeeze(-1)
        mean = mu.mean(0)
        total = var.mean(0) + (mu - mean).square().mean(0)
        return (mean, total, mu, var) if self.with_members else (mean, total)


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
