"""Distribution shift: deterministic corruptions at five severities, and a shifted MNIST-1D.

Image corruptions follow Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to
Common Corruptions and Perturbations" (ICLR 2019); signal corruptions are their analogues for
1-D series such as MNIST-1D (Greydanus, "Scaling Down Deep Learning", 2020).

Units. Corruptions know nothing about the dataset; they read its scale from :class:`Stats`
(``lo``, ``hi``, ``std`` of the clean split, by default of the ``x`` being corrupted):

- images ``(N, C, H, W)`` are corrupted in [0, 1] units, ``u = (x - lo) / (hi - lo)``; the
  corruption's parameters (a noise sigma of 0.08, a brightness offset of 0.1, ...) are in
  those units, results are clipped to [0, 1] where the definition clips (noise, brightness,
  contrast) and mapped back by ``x = lo + u * (hi - lo)``. Geometric ones (rotation,
  translation) fill the uncovered background with ``lo``; blur and pixelate average pixels
  (their sigma and block size are in pixels).
- signals ``(N, C, L)`` get noise whose standard deviation is a multiple of ``std``; time and
  amplitude changes are scale-free.

Determinism. Every call draws from its own ``torch.Generator().manual_seed(s)`` (on the CPU,
moved to ``x``'s device), ``s = derive_seed(seed, "corruption", name, severity)``: the same
inputs give bitwise identical outputs and no global state is touched. Each example gets its
own draws (a rotation sign, a noise field), vectorised over the batch.

Names shared by images and signals (``gaussian_noise``) are one registry entry of kind
``"any"`` whose function dispatches on the rank of ``x``; other entries are ``"image"`` or
``"signal"`` and refuse the other rank.

Example:
    >>> x = torch.rand(16, 1, 8, 8)
    >>> shifted = {s: corrupt(x, "rotation", s) for s in SEVERITIES}
"""

from __future__ import annotations

import functools
import math
import numbers
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError, DataError
from ..registry import Registry
from ..seeding import derive_seed

__all__ = ["SEVERITIES", "Stats", "Corruption", "CORRUPTIONS", "register_corruption", "corrupt",
           "default_corruptions", "corruptions_for", "distortion", "mnist1d_shifted"]

SEVERITIES = (1, 2, 3, 4, 5)
_KINDS = {"image": "images (N, C, H, W)", "signal": "signals (N, C, L)", "any": "images (N, C, H, W) or signals (N, C, L)"}
_RANKS = {"image": (4,), "signal": (3,), "any": (3, 4)}  # rank of x (N, *example)


@dataclass(frozen=True)
class Stats:
    """Statistics of the clean split being corrupted: its minimum, maximum and standard deviation.

    Raises:
        ConfigError: a value is not finite, ``hi < lo`` or ``std < 0``.
    """

    lo: float
    hi: float
    std: float

    def __post_init__(self) -> None:
        values = (self.lo, self.hi, self.std)
        if not all(isinstance(v, numbers.Real) and math.isfinite(v) for v in values) or self.hi < self.lo or self.std < 0:
            raise ConfigError(f"Stats needs finite lo <= hi and std >= 0, got lo={self.lo!r}, hi={self.hi!r}, std={self.std!r}")

    @classmethod
    def of(cls, x: Tensor) -> "Stats":
        """Min, max and (population) standard deviation over all of ``x``; DataError if empty or not finite."""
        if x.numel() == 0 or not bool(torch.isfinite(x).all()):
            raise DataError(f"Stats need a non-empty, finite tensor; got shape {tuple(x.shape)}")
        x = x.double()
        return cls(float(x.min()), float(x.max()), float(x.std(correction=0)))


@dataclass(frozen=True)
class Corruption:
    """One registered corruption: ``fn(x, severity 1..5, generator, stats)`` returns the corrupted x (same shape, dtype).

    ``kind`` is ``"image"`` (x is (N, C, H, W)), ``"signal"`` (x is (N, C, L)) or ``"any"`` (both);
    ``description`` is one line with the parameter of each severity.
    """

    name: str
    kind: str
    fn: Callable[[Tensor, int, torch.Generator, Stats], Tensor]
    description: str

    def applies_to(self, input_shape: Sequence[int]) -> bool:
        """Whether examples of ``input_shape`` ((C, H, W), (C, L), or (D,) for the position-free ones) fit this corruption."""
        rank = len(tuple(input_shape)) + 1
        return rank in _RANKS[self.kind] or (rank == 2 and self.name in _TABULAR_SUITE)


CORRUPTIONS: Registry[Corruption] = Registry("corruption", discover=("ensemblekit.data",))  # data/corruptions.py registers the suite


def register_corruption(name: str, kind: str, description: str) -> Callable[[Callable], Callable]:
    """Decorator registering ``fn(x, severity, generator, stats)`` as a :class:`Corruption` named ``name``.

    ``kind`` is ``"image"``, ``"signal"`` or ``"any"`` (then ``fn`` dispatches on ``x.ndim``);
    the decorator returns ``fn`` unchanged. Raises ConfigError for an unknown kind and
    ValueError when the name is taken.
    """
    if kind not in _KINDS:
        raise ConfigError(f"corruption kind must be one of {', '.join(_KINDS)}, got {kind!r}")

    def decorator(fn: Callable) -> Callable:
        CORRUPTIONS.register(name)(Corruption(name.lower(), kind, fn, description))
        return fn

    return decorator


def _integer(what: str, value: object, lo: int | None = None, hi: int | None = None, hint: str = "") -> int:
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not ok or (lo is not None and value < lo) or (hi is not None and value > hi):  # type: ignore[operator]
        span = f" in {lo}..{hi}" if hi is not None else f" >= {lo}" if lo is not None else ""
        raise ConfigError(f"{what} must be an integer{span}{hint}, got {value!r}")
    return int(value)  # type: ignore[arg-type]


def corrupt(x: Tensor, name: str, severity: int, seed: int = 0, stats: Stats | None = None) -> Tensor:
    """Apply the corruption ``name`` at ``severity`` to a batch, deterministically.

    Args:
        x: floating tensor, images (N, C, H, W) or signals (N, C, L), finite.
        name: a registered corruption (:func:`corruptions_for` lists those for a shape).
        severity: integer 0..5; 0 returns ``x.clone()``.
        seed: integer; with ``name`` and ``severity`` it fixes every random draw (default 0).
        stats: the clean split's :class:`Stats` (default ``Stats.of(x)``); pass the clean
            split's when corrupting a subset, so that the units stay the same.

    Returns:
        The corrupted batch, same shape, dtype and device as ``x`` (computed in float32, or
        float64 for float64 inputs).

    Raises:
        ConfigError: unknown name (valid names listed), severity not an integer in 0..5,
            a corruption for the other kind of data, a non-integer seed.
        DataError: ``x`` is not floating or not finite; an image corruption in [0, 1] units
            on data with ``hi == lo``.
    """
    c = CORRUPTIONS.get(name)
    severity = _integer("severity", severity, 0, 5, " (0 = clean)")
    seed = _integer("seed", seed)
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise DataError(f"corrupt needs a floating-point tensor, got {getattr(x, 'dtype', type(x).__name__)}")
    if x.ndim == 2 and c.name in _TABULAR_SUITE:  # feature vectors (N, D): the signal form on (N, 1, D)
        return corrupt(x.unsqueeze(1), name, severity, seed, stats).squeeze(1)
    if x.ndim not in _RANKS[c.kind]:
        words = {4: " (images (N, C, H, W))", 3: " (signals (N, C, L))"}.get(x.ndim, "")
        raise ConfigError(f"corruption {c.name!r} is for {_KINDS[c.kind]}; got x of shape {tuple(x.shape)}{words}")
    if severity == 0 or x.numel() == 0:
        return x.clone()
    if not bool(torch.isfinite(x).all()):
        raise DataError("corrupt needs finite inputs; x has NaN or infinite values")
    stats = Stats.of(x) if stats is None else stats
    g = torch.Generator().manual_seed(derive_seed(seed, "corruption", c.name, severity))
    work = x.to(torch.float64 if x.dtype == torch.float64 else torch.float32)
    return c.fn(work, severity, g, stats).to(x.dtype)


_IMAGE_SUITE = ("gaussian_noise", "shot_noise", "impulse_noise", "gaussian_blur", "contrast", "brightness",
                "pixelate", "rotation", "translation")
_SIGNAL_SUITE = ("gaussian_noise", "correlated_noise", "time_shift", "time_scale", "amplitude_scale")
_TABULAR_SUITE = ("gaussian_noise", "amplitude_scale")  # position-free: also for feature vectors (N, D)


def default_corruptions(input_shape: Sequence[int]) -> list[str]:
    """The standard suite for one example's shape: 9 image names for (C, H, W), 5 signal names for (C, L),
    the 2 position-free ones (``gaussian_noise``, ``amplitude_scale``) for feature vectors (D,).

    Raises:
        DataError: ``input_shape`` has none of those ranks.
    """
    rank = len(tuple(input_shape))
    if rank not in (1, 2, 3):
        raise DataError(f"corruptions need examples (C, H, W), (C, L) or (D,); got input shape {tuple(input_shape)}")
    return list({3: _IMAGE_SUITE, 2: _SIGNAL_SUITE, 1: _TABULAR_SUITE}[rank])


def corruptions_for(input_shape: Sequence[int]) -> list[str]:
    """Every registered corruption (sorted) that applies to examples of ``input_shape`` ((C, H, W) or (C, L))."""
    return [n for n in CORRUPTIONS.names() if CORRUPTIONS.get(n).applies_to(input_shape)]


def distortion(clean: Tensor, shifted: Tensor) -> float:
    """Relative RMS change ``||shifted - clean|| / ||clean - mean(clean)||`` (0 = unchanged).

    Raises:
        DataError: different shapes, or ``clean`` is constant.
    """
    if clean.shape != shifted.shape:
        raise DataError(f"distortion needs tensors of one shape, got {tuple(clean.shape)} and {tuple(shifted.shape)}")
    c, s = clean.double(), shifted.double()
    spread = torch.linalg.vector_norm(c - c.mean())
    if not spread > 0:
        raise DataError("distortion is undefined for a constant clean tensor")
    return float(torch.linalg.vector_norm(s - c) / spread)


# --- shifted MNIST-1D ---------------------------------------------------------------------

_MNIST1D_SCALE = (1.0, 1.5, 2.0, 2.5, 3.0, 4.0)  # by severity 0..5
_MNIST1D_KNOBS = ("corr_noise_scale", "iid_noise_scale", "shear_scale", "scale_coeff")


def mnist1d_shifted(severity: int, num_examples: int = 1000, seed: int = 0) -> tuple[Tensor, Tensor]:
    """A fresh MNIST-1D test set drawn with the generator's noise and geometry scaled up by ``severity``.

    The ``mnist1d`` package's ``make_dataset`` (Greydanus, "Scaling Down Deep Learning", 2020)
    runs with ``corr_noise_scale``, ``iid_noise_scale``, ``shear_scale`` and ``scale_coeff``
    multiplied by 1, 1.5, 2, 2.5, 3, 4 for severity 0..5 (0: the published settings, i.e. new
    in-distribution examples). Its generator seed derives from ``seed`` and is never 42, the
    published data's seed. The seed does not depend on ``severity``: the severities of one
    ``seed`` are the same draws with larger noise, paired example by example (same labels).
    Like the published data, each set is standardised by its own mean and std, so a severity
    shows as a lower signal-to-noise ratio and more deformation, not as a larger amplitude.

    Args:
        severity: integer 0..5.
        num_examples: number of examples, >= 1 (default 1000).
        seed: integer (default 0).

    Returns:
        ``(x, y)``: x float32 (num_examples, 1, 40), y int64 (num_examples,) in 0..9; cached,
        every call returns fresh copies. numpy's and Python's global random states are kept.

    Raises:
        ConfigError: severity not an integer in 0..5, num_examples < 1, seed not an integer.
    """
    key = _integer("severity", severity, 0, 5, " (0 = clean)"), _integer("num_examples", num_examples, 1), _integer("seed", seed)
    x, y = _mnist1d_shifted_arrays(*key)
    return torch.from_numpy(x.copy()), torch.from_numpy(y.copy())


@functools.lru_cache(maxsize=16)
def _mnist1d_shifted_arrays(severity: int, num_examples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from mnist1d.data import get_dataset_args

    from .registry import make_mnist1d

    args = get_dataset_args()
    for knob in _MNIST1D_KNOBS:
        setattr(args, knob, getattr(args, knob) * _MNIST1D_SCALE[severity])
    args.num_samples = 10 * math.ceil(num_examples / 10)  # make_dataset draws num_samples // 10 per class
    args.train_split = 0.0  # every generated example lands in the test part
    generator_seed = derive_seed(seed, "mnist1d_shifted")
    args.seed = generator_seed + 1 if generator_seed == 42 else generator_seed
    d = make_mnist1d(args)
    return (np.ascontiguousarray(d["x_test"][:num_examples, None, :], dtype=np.float32),
            np.asarray(d["y_test"][:num_examples], dtype=np.int64))
