"""Hyperparameters of a hypernetwork family, shared by the ``varhyper`` method and experiment."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, model_validator

from ..schema import StrictModel

__all__ = ["FamilySettings"]


class FamilySettings(StrictModel):
    """The lambda grid and range, sampling, prior and the forms' sizes.

    ``lambdas`` must lie inside ``10**log10_range`` (default: one per decade of the range,
    1e-3, 1e-2, ..., 1e2 for the default range); ``samples`` lambdas are drawn per
    mini-batch; ``rank``/``hidden`` size the low-rank form, ``pivots`` the piecewise one.
    ``weighting``: ``none`` (the plain mean over the sampled lambdas, the paper's objective) or
    ``balanced`` (each lambda's term divided by ``1 + lambda``; see :class:`HyperModel`).
    """

    lambdas: list[float] | None = Field(None, min_length=1)
    log10_range: tuple[float, float] = (-3.0, 2.0)
    samples: int = Field(5, ge=1)
    prior_std: float = Field(1.0, gt=0)
    init_log_sigma: float = -3.0
    rank: int = Field(1, ge=1)
    hidden: int = Field(50, ge=1)
    pivots: int = Field(6, ge=2)
    weighting: Literal["none", "balanced"] = "none"

    @model_validator(mode="after")
    def _check_range(self) -> "FamilySettings":
        lo, hi = self.log10_range
        if not lo < hi:
            raise ValueError(f"log10_range must be (L, R) with L < R, got {self.log10_range}")
        if self.lambdas is None:  # one per decade of the range (the default range gives 1e-3, ..., 1e2)
            grid = [float(10.0**u) for u in range(math.ceil(lo), math.floor(hi) + 1)] or [float(10 ** ((lo + hi) / 2))]
            object.__setattr__(self, "lambdas", grid)
        bad = [v for v in self.lambdas if not 10**lo * (1 - 1e-9) <= v <= 10**hi * (1 + 1e-9)]
        if bad:
            raise ValueError(f"lambdas must lie in [{10**lo:g}, {10**hi:g}] (log10_range), got {bad}")
        return self

    def hyper_kwargs(self) -> dict[str, Any]:
        """The :class:`HyperModel` keyword arguments these settings fix."""
        return {"log10_range": self.log10_range, "samples": self.samples, "prior_std": self.prior_std,
                "init_log_sigma": self.init_log_sigma, "weighting": self.weighting}
