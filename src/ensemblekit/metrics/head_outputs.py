"""The output convention of regression heads: raw outputs -> means and variances -> a Gaussian predictive.

A learned-variance head (the ``gaussian`` model wrapper, :mod:`ensemblekit.models.gaussian_head`)
returns one tensor ``(..., 2*D)``: the D means, then the D raw variances, which become
``softplus(raw) + min_var`` (Lakshminarayanan, Pritzel & Blundell, NeurIPS 2017: a positive
variance through softplus; the floor keeps the NLL finite). A ``variance: none`` head returns
the D means only. The convention lives here, below the models, so that the one prediction pass
(:mod:`ensemblekit.evaluation.forward`) and the losses read it without knowing any model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F

from ..data.scaling import Standardizer
from ..errors import ConfigError, DataError
from .predictive import Categorical, Gaussian

__all__ = ["split_gaussian", "split_mean", "gaussian_from_outputs", "Readout", "TASKS", "CLASSIFICATION"]

TASKS = ("classification", "regression")


def _check_min_var(min_var: Any) -> float:
    if isinstance(min_var, bool) or not isinstance(min_var, (int, float)) or not min_var >= 0:
        raise ConfigError(f"min_var must be a number >= 0 (the variance floor), got {min_var!r}")
    return float(min_var)


def split_gaussian(out: torch.Tensor, min_var: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Means and variances from a learned-variance head's raw outputs.

    ``mean = out[..., :D]``, ``var = softplus(out[..., D:]) + min_var``.

    Args:
        out: raw outputs ``(..., 2*D)``: ``(B, 2*D)`` from one member, ``(M, B, 2*D)`` from
            a stacked ensemble.
        min_var: the variance floor (default 1e-6, >= 0): every variance is > ``min_var``
            (>= for an output so negative that softplus underflows to 0).

    Returns:
        ``(mean, var)``, each ``(..., D)``; for D = 1 the last axis is squeezed, so one
        target gives ``(B,)`` (``(M, B)`` stacked), the layout of
        :class:`~ensemblekit.metrics.predictive.Gaussian` for one target.

    Raises:
        DataError: ``out`` has no last axis or an odd one.
        ConfigError: ``min_var`` < 0.

    Example:
        >>> mean, var = split_gaussian(torch.zeros(3, 2))
        >>> mean.shape, var[0].item()   # (torch.Size([3]), log(2) + 1e-6)
    """
    min_var = _check_min_var(min_var)
    if out.dim() < 1 or out.shape[-1] % 2 or out.shape[-1] == 0:
        raise DataError(f"a gaussian head's outputs must have an even last axis 2*D (means, then raw variances), "
                        f"got shape {tuple(out.shape)}")
    d = out.shape[-1] // 2
    mean, raw = out[..., :d], out[..., d:]
    var = F.softplus(raw) + min_var
    if d == 1:
        return mean.squeeze(-1), var.squeeze(-1)
    return mean, var


def split_mean(out: torch.Tensor) -> torch.Tensor:
    """The means of a ``variance: none`` head: ``out`` ``(..., D)``, squeezed to ``(...)`` for D = 1.

    Example:
        >>> split_mean(torch.zeros(4, 1)).shape
        torch.Size([4])
    """
    if out.dim() < 1 or out.shape[-1] == 0:
        raise DataError(f"a mean head's outputs must have a last axis D >= 1, got shape {tuple(out.shape)}")
    return out.squeeze(-1) if out.shape[-1] == 1 else out


def gaussian_from_outputs(out: torch.Tensor, min_var: float = 1e-6) -> Gaussian:
    """The members' predictive of a learned-variance head's stacked raw outputs ``(M, N, 2*D)``."""
    if out.dim() != 3:
        raise DataError(f"a gaussian head's stacked outputs must be (M, N, 2*D), got shape {tuple(out.shape)}")
    mean, var = split_gaussian(out, min_var)
    return Gaussian(mean, var)


@dataclass(frozen=True)
class Readout:
    """How a predictor's raw outputs ``(M, N, K)`` become its members' predictive, in the data's units.

    Attributes:
        task: ``classification`` (K = C logits -> softmax) or ``regression``.
        num_outputs: D, the number of regression targets (0 for classification). A regression
            head of width 2*D has learned variances (:func:`split_gaussian`); a head of width D
            is means only, its variance the fitted ``noise_var``.
        min_var: the variance floor of learned-variance heads (default 1e-6).
        scaling: the standardisation the predictor was trained under (``None``: none): inputs
            are scaled before the forward pass, and the Gaussian is mapped back to the
            targets' units (``mean * s + m``, ``var * s^2``) after it.
        noise_var: a means-only head's homoscedastic variance per output (standard units),
            the mean squared training residual; ``None`` for other heads.

    Example:
        >>> Readout("regression", 1).read(torch.zeros(2, 3, 2)).mean.shape
        torch.Size([2, 3])
    """

    task: str = "classification"
    num_outputs: int = 0
    min_var: float = 1e-6
    scaling: Standardizer | None = None
    noise_var: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ConfigError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if self.task == "regression" and (isinstance(self.num_outputs, bool) or int(self.num_outputs) < 1):
            raise ConfigError(f"a regression readout needs num_outputs >= 1, got {self.num_outputs!r}")
        _check_min_var(self.min_var)

    @classmethod
    def for_data(cls, data: Any, *, scaling: Standardizer | None = None, min_var: float = 1e-6) -> "Readout":
        """The readout of a model trained on ``data`` (a :class:`~ensemblekit.data.Data`)."""
        if getattr(data, "task", "classification") != "regression":
            return CLASSIFICATION
        return cls("regression", int(data.num_outputs), min_var, scaling)

    @property
    def is_regression(self) -> bool:
        return self.task == "regression"

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """Inputs as the network was trained on them (standardised when the readout has scaling)."""
        return x if self.scaling is None else self.scaling.transform_x(x).to(x.device)

    def read(self, z: torch.Tensor) -> Categorical | Gaussian:
        """The members' predictive of raw outputs ``z`` ``(M, N, K)`` (in the data's units)."""
        if not self.is_regression:
            return Categorical(z.softmax(-1), z)
        d = self.num_outputs
        if z.dim() != 3 or z.shape[-1] not in (d, 2 * d):
            raise DataError(f"a regression head for {d} target(s) outputs (M, N, {2 * d}) (means and variances) or "
                            f"(M, N, {d}) (means only), got shape {tuple(z.shape)}")
        if z.shape[-1] == 2 * d:
            mean, var = split_gaussian(z, self.min_var)
        else:
            mean = split_mean(z)
            noise = torch.tensor(self.noise_var if self.noise_var is not None else [self.min_var] * d, dtype=mean.dtype, device=mean.device)
            var = (noise.squeeze(0) if d == 1 else noise).expand_as(mean).clamp_min(self.min_var)
        if self.scaling is not None and self.scaling.scales_targets:
            mean, var = self.scaling.inverse_gaussian(mean, var)
            mean, var = mean.to(z.device), var.to(z.device)
        return Gaussian(mean, var)

    def with_noise(self, residual_var: Sequence[float]) -> "Readout":
        """This readout with a means-only head's fitted noise variance (per output, standard units)."""
        return Readout(self.task, self.num_outputs, self.min_var, self.scaling, tuple(float(v) for v in residual_var))

    def export_constants(self) -> dict[str, Any] | None:
        """What an exported graph needs to read the outputs (:class:`ensemblekit.predictors.EnsembleModule`):
        ``None`` for a classifier; else ``num_outputs``, ``min_var``, the scaling's ``x_mean``,
        ``x_std``, ``y_mean``, ``y_std`` (``None`` without scaling) and ``noise_var``."""
        if not self.is_regression:
            return None
        s = self.scaling
        targets = s is not None and s.scales_targets
        return {"num_outputs": self.num_outputs, "min_var": self.min_var,
                "x_mean": None if s is None else s.x_mean, "x_std": None if s is None else s.x_std,
                "y_mean": s.y_mean if targets else None, "y_std": s.y_std if targets else None,  # type: ignore[union-attr]
                "noise_var": None if self.noise_var is None else list(self.noise_var)}

    def state(self) -> dict[str, Any] | None:
        """JSON-able metadata for a predictor's file (``None`` for classification: files unchanged)."""
        if not self.is_regression:
            return None
        return {"task": self.task, "num_outputs": self.num_outputs, "min_var": self.min_var,
                "scaling": None if self.scaling is None else self.scaling.state(),
                "noise_var": None if self.noise_var is None else list(self.noise_var)}

    @classmethod
    def from_state(cls, state: Mapping[str, Any] | None) -> "Readout":
        """Read :meth:`state` back (``None``: classification).

        Raises:
            DataError: malformed metadata.
        """
        if state is None:
            return CLASSIFICATION
        if not isinstance(state, Mapping):
            raise DataError(f"a predictor's readout metadata must be a mapping, got {type(state).__name__}")
        try:
            scaling = state.get("scaling")
            noise = state.get("noise_var")
            return cls(str(state["task"]), int(state["num_outputs"]), float(state.get("min_var", 1e-6)),
                       Standardizer.from_state(scaling) if scaling is not None else None,
                       tuple(float(v) for v in noise) if noise is not None else None)
        except (KeyError, TypeError, ValueError, ConfigError) as exc:
            raise DataError(f"a predictor's readout metadata is malformed ({type(exc).__name__}: {exc})") from None


CLASSIFICATION = Readout()
"""The readout of every classifier: logits -> softmax."""
