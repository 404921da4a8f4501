"""Shift and out-of-distribution inputs for flat tabular features ``(N, F)``, in each feature's own units.

The image and signal corruptions of :mod:`ensemblekit.data.shift` read one scale for the
whole input; tabular features each have their own (an age in years next to a blood
pressure), so these read per-feature statistics of the TRAINING split
(:class:`FeatureStats`: mean, population std, min and max of every feature).

Corruptions, severities 1..5 (0 = clean, returned unchanged):

- ``feature_noise``: ``x + N(0, (f_s * std_j)^2)`` per entry, ``f_s`` =
  :data:`NOISE_FRACTIONS` ``(0.1, 0.25, 0.5, 0.75, 1.0)`` of each feature's training std;
- ``feature_scale``: every feature multiplied by ``a_s`` = :data:`SCALE_FACTORS`
  ``(1.1, 1.25, 1.5, 2.0, 3.0)`` (a change of units or a miscalibrated sensor; no randomness);
- ``dropped_features``: ``k_s = max(1, round(p_s F))`` features, ``p_s`` =
  :data:`DROP_SHARES` ``(0.1, 0.2, 0.3, 0.5, 0.7)``, set to their training mean for every
  example (missing measurements imputed by the mean). With F = 1 every severity drops the one feature.

Determinism: every draw comes from ``torch.Generator().manual_seed(derive_seed(seed,
"tabular_shift", name))``, which does not depend on the severity, so the severities of one
seed are paired: the same noise draw scaled by ``f_s``, and nested dropped sets (the features
dropped at severity s are among those dropped at s + 1). No global random state is touched.

Out-of-distribution inputs: :func:`uniform_box` (every feature uniform over its training range,
the per-feature analogue of :mod:`ensemblekit.data.ood`'s ``noise``) and
:func:`extrapolation_split` (the test examples beyond the training range of one feature).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from ..errors import ConfigError, DataError
from ..registry import Registry
from ..seeding import derive_seed

__all__ = ["NOISE_FRACTIONS", "SCALE_FACTORS", "DROP_SHARES", "EXTRAPOLATION", "TABULAR_SUITE", "FeatureStats", "TABULAR_CORRUPTIONS",
           "tabular_corrupt", "feature_noise", "feature_scale", "dropped_features", "uniform_box", "Extrapolation",
           "extrapolation_split"]

NOISE_FRACTIONS = (0.1, 0.25, 0.5, 0.75, 1.0)
SCALE_FACTORS = (1.1, 1.25, 1.5, 2.0, 3.0)
DROP_SHARES = (0.1, 0.2, 0.3, 0.5, 0.7)
TABULAR_SUITE = ("feature_noise", "feature_scale", "dropped_features")  # the default shift suite of flat regression inputs
EXTRAPOLATION = "extrapolation"  # the name of the extrapolation OOD set in an evaluation block

TabularFn = Callable[[Tensor, int, torch.Generator, "FeatureStats"], Tensor]
TABULAR_CORRUPTIONS: Registry[TabularFn] = Registry("tabular corruption")


def _flat(x: Tensor, name: str = "x") -> Tensor:
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise DataError(f"`{name}` must be a floating-point tensor of shape (N, F), got {getattr(x, 'dtype', type(x).__name__)}")
    if x.dim() != 2:
        raise DataError(f"`{name}` must be flat tabular features of shape (N, F), got shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise DataError(f"`{name}` must be finite, got NaN or infinite values")
    return x


@dataclass(frozen=True)
class FeatureStats:
    """Per-feature statistics of the training inputs, each ``(F,)`` float64: mean, population std, min, max."""

    mean: Tensor
    std: Tensor
    lo: Tensor
    hi: Tensor

    @classmethod
    def of(cls, x_train: Tensor) -> "FeatureStats":
        """The statistics of ``x_train`` ``(N, F)``; DataError if it is not flat, finite and non-empty."""
        x = _flat(x_train, "x_train").double()
        if x.shape[0] == 0:
            raise DataError("`x_train` must hold at least one example, got shape (0, F)")
        return cls(x.mean(0), x.std(0, correction=0), x.amin(0), x.amax(0))

    @property
    def num_features(self) -> int:
        return int(self.mean.shape[0])


def _severity(severity: object) -> int:
    if isinstance(severity, bool) or not isinstance(severity, numbers.Integral) or not 0 <= severity <= 5:
        raise ConfigError(f"severity must be an integer in 0..5 (0 = clean), got {severity!r}")
    return int(severity)


@TABULAR_CORRUPTIONS.register("feature_noise")
def feature_noise(x: Tensor, severity: int, g: torch.Generator, stats: FeatureStats) -> Tensor:
    """``x + N(0, (NOISE_FRACTIONS[s-1] * std_j)^2)`` per entry (std_j: feature j's training std)."""
    z = torch.randn(x.shape, generator=g, dtype=torch.float64)
    return (x.double() + NOISE_FRACTIONS[severity - 1] * stats.std * z).to(x.dtype)


@TABULAR_CORRUPTIONS.register("feature_scale")
def feature_scale(x: Tensor, severity: int, g: torch.Generator, stats: FeatureStats) -> Tensor:
    """Every feature multiplied by ``SCALE_FACTORS[s-1]``."""
    return x * SCALE_FACTORS[severity - 1]


@TABULAR_CORRUPTIONS.register("dropped_features")
def dropped_features(x: Tensor, severity: int, g: torch.Generator, stats: FeatureStats) -> Tensor:
    """``max(1, round(DROP_SHARES[s-1] * F))`` features (the first of one seeded permutation) set to their training mean."""
    f = stats.num_features
    k = min(f, max(1, round(DROP_SHARES[severity - 1] * f)))
    drop = torch.randperm(f, generator=g)[:k]
    out = x.clone()
    out[:, drop] = stats.mean[drop].to(x.dtype)
    return out


def tabular_corrupt(x: Tensor, name: str, severity: int, stats: FeatureStats, seed: int = 0) -> Tensor:
    """``x`` ``(N, F)`` corrupted by ``name`` at ``severity`` (0..5; 0 returns a copy), read against training ``stats``.

    Args:
        x: flat features ``(N, F)`` (float), on the CPU.
        name: one of ``feature_noise``, ``feature_scale``, ``dropped_features``.
        severity: integer 0..5.
        stats: :meth:`FeatureStats.of` the training inputs (F must match).
        seed: integer; the same seed gives bitwise identical outputs.

    Raises:
        ConfigError: an unknown name (the valid ones listed), a severity outside 0..5, a non-integer seed.
        DataError: ``x`` not flat, finite floats, or F different from the statistics'.

    Example:
        >>> stats = FeatureStats.of(x_train)
        >>> noisy = {s: tabular_corrupt(x_test, "feature_noise", s, stats) for s in range(1, 6)}
    """
    fn = TABULAR_CORRUPTIONS.get(name)
    severity = _severity(severity)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ConfigError(f"seed must be an integer, got {seed!r}")
    x = _flat(x)
    if x.shape[1] != stats.num_features:
        raise DataError(f"`x` has {x.shape[1]} features, the training statistics {stats.num_features}")
    if severity == 0:
        return x.clone()
    g = torch.Generator().manual_seed(derive_seed(int(seed), "tabular_shift", str(name).lower()))
    return fn(x, severity, g, stats)


def uniform_box(x_train: Tensor, n: int, seed: int = 0) -> Tensor:
    """``n`` inputs ``(n, F)`` float32, each feature uniform over its training range ``[min_j, max_j]``.

    Draws from ``torch.Generator().manual_seed(derive_seed(seed, "ood", "noise"))`` (the seed
    :func:`ensemblekit.data.ood.ood_inputs` gives its ``noise`` set).
    """
    stats = FeatureStats.of(x_train)
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ConfigError(f"n must be an integer >= 1, got {n!r}")
    g = torch.Generator().manual_seed(derive_seed(int(seed), "ood", "noise"))
    u = torch.rand((int(n), stats.num_features), generator=g, dtype=torch.float64)
    return (stats.lo + (stats.hi - stats.lo) * u).to(torch.float32)


@dataclass(frozen=True)
class Extrapolation:
    """The test examples beyond the training range of one feature.

    Attributes:
        feature: the feature's index. low, high: its training minimum and maximum.
        outside: bool ``(N_test,)``, True where the test value is ``< low`` or ``> high``.
    """

    feature: int
    low: float
    high: float
    outside: Tensor

    @property
    def num_outside(self) -> int:
        return int(self.outside.sum())


def extrapolation_split(x_train: Tensor, x_test: Tensor, feature: int | None = None) -> Extrapolation:
    """Split the test examples into those inside and those beyond the training range of ``feature``.

    Args:
        x_train, x_test: flat features ``(N, F)`` with the same F.
        feature: the feature's index (negative counts from the end); ``None`` (default): the
            feature with the most test examples outside its training range (the lowest index on a tie).

    Returns:
        An :class:`Extrapolation` (``outside`` is the OOD set; the rest of the test split is in-distribution).

    Raises:
        DataError: inputs not flat or of different F; no test example outside the chosen
            feature's range (or any feature's, for ``None``); every test example outside.
        ConfigError: ``feature`` not an integer index of a feature.

    Example:
        >>> ex = extrapolation_split(torch.tensor([[0.0], [1.0]]), torch.tensor([[0.5], [2.0]]))
        >>> ex.feature, ex.outside.tolist()
        (0, [False, True])
    """
    stats = FeatureStats.of(x_train)
    xt = _flat(x_test, "x_test").double()
    f = stats.num_features
    if xt.shape[1] != f:
        raise DataError(f"`x_test` has {xt.shape[1]} features, `x_train` {f}")
    beyond = (xt < stats.lo) | (xt > stats.hi)  # (N_test, F)
    if feature is None:
        counts = beyond.sum(0)
        j = int(torch.argmax(counts))  # the first maximum
        if int(counts[j]) == 0:
            raise DataError(f"no test example lies outside the training range of any of the {f} features: "
                            "there is no extrapolation split")
    else:
        if isinstance(feature, bool) or not isinstance(feature, numbers.Integral) or not -f <= feature < f:
            raise ConfigError(f"feature must be an integer index of one of the {f} features, got {feature!r}")
        j = int(feature) % f
        if not bool(beyond[:, j].any()):
            raise DataError(f"no test example lies outside the training range [{float(stats.lo[j]):g}, "
                            f"{float(stats.hi[j]):g}] of feature {j}: there is no extrapolation split")
    if bool(beyond[:, j].all()):
        raise DataError(f"every test example lies outside the training range of feature {j}: nothing in-distribution to compare with")
    return Extrapolation(j, float(stats.lo[j]), float(stats.hi[j]), beyond[:, j].clone())
