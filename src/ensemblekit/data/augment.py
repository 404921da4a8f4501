"""Batch augmentations on tensors: random training transforms, mixup, test-time transforms.

Inputs have shape ``(*lead, *example_shape)``: ``lead`` is ``(B,)`` when members share a
batch or ``(M, B)`` when each member has its own. Examples are images ``(C, H, W)`` or 1-D
signals ``(C, L)``. A random transform draws one choice per element of ``lead``, vectorised,
from the ``generator`` it is given (results repeat under a seed). Draws happen on the
generator's device and move to the input's: a CPU generator also drives CUDA inputs.

Example:
    >>> aug = build_augment(["hflip", {"name": "crop", "padding": 4}], example_shape=(3, 32, 32))
    >>> x = aug(torch.randn(5, 128, 3, 32, 32), torch.Generator().manual_seed(0))
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError, DataError

__all__ = ["Transform", "Compose", "AUGMENTS", "TTA_TRANSFORMS", "hflip", "crop", "cutout", "shift", "crop1d",
           "build_augment", "check_augment_spec", "build_tta", "check_tta_spec", "mixup"]

_KIND = {3: "image examples (C, H, W)", 2: "signal examples (C, L)"}


class Transform:
    """One batch transform; it knows the example rank it needs (``rank=None``: any).

    Call it as ``t(x, generator=None, *, example_ndim=None)`` with ``x`` of shape
    ``(*lead, *example)``; ``example_ndim`` is the number of trailing example dimensions
    (default: the transform's own rank). Returns a tensor of the same shape.

    Raises:
        DataError: the examples have the wrong rank, or there is no leading dimension.
    """

    def __init__(self, name: str, rank: int | None, fn: Callable[..., Tensor]) -> None:
        self.name, self.rank, self._fn = name, rank, fn

    def check(self, example_shape: tuple[int, ...]) -> None:
        """Raise DataError if examples of ``example_shape`` do not fit this transform."""
        if self.rank is not None and len(example_shape) != self.rank:
            raise DataError(f"{self.name} needs {_KIND[self.rank]}; got examples of shape {tuple(example_shape)}")

    def __call__(self, x: Tensor, generator: torch.Generator | None = None, *, example_ndim: int | None = None) -> Tensor:
        k = self.rank if example_ndim is None else example_ndim
        if k is None or x.ndim <= k:
            raise DataError(f"{self.name} needs inputs of shape (*lead, *example) with example_ndim={k} "
                            f"and at least one leading dimension; got shape {tuple(x.shape)}")
        self.check(tuple(x.shape[x.ndim - k:]))
        return self._fn(x, tuple(x.shape[: x.ndim - k]), generator)

    def __repr__(self) -> str:
        return f"Transform({self.name})"


class Compose:
    """Transforms applied in order to inputs whose trailing dimensions are ``example_shape``.

    ``compose(x, generator=None)`` checks ``x`` has shape ``(*lead, *example_shape)``
    (DataError otherwise) and returns the transformed tensor, same shape.
    """

    def __init__(self, transforms: Sequence[Transform], example_shape: Sequence[int]) -> None:
        self.example_shape = _example_shape(example_shape)
        for t in transforms:
            t.check(self.example_shape)
        self.transforms = list(transforms)

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        k = len(self.example_shape)
        if x.ndim <= k or tuple(x.shape[x.ndim - k:]) != self.example_shape:
            raise DataError(f"transforms expect inputs of shape (*lead, {', '.join(map(str, self.example_shape))}) "
                            f"with at least one leading dimension; got {tuple(x.shape)}")
        for t in self.transforms:
            x = t(x, generator, example_ndim=k)
        return x

    def __repr__(self) -> str:
        return f"Compose([{', '.join(t.name for t in self.transforms)}], example_shape={self.example_shape})"


def _example_shape(shape: Sequence[int]) -> tuple[int, ...]:
    out = tuple(int(s) for s in shape) if isinstance(shape, Sequence) else ()
    if not out or any(s < 1 for s in out):
        raise DataError(f"example_shape must be a non-empty tuple of positive sizes, e.g. (3, 32, 32); got {shape!r}")
    return out


# --- random draws, one per element of `lead` ------------------------------------------

def _dev(generator: torch.Generator | None, x: Tensor) -> torch.device:
    return generator.device if generator is not None else x.device  # draw where the generator lives


def _uniform(lead: tuple[int, ...], generator: torch.Generator | None, x: Tensor) -> Tensor:
    return torch.rand(lead, generator=generator, device=_dev(generator, x)).to(x.device)


def _integers(low: int, high: int, lead: tuple[int, ...], generator: torch.Generator | None, x: Tensor) -> Tensor:
    """Uniform integers in ``[low, high]`` (both included), shape ``lead``."""
    return torch.randint(low, high + 1, lead, generator=generator, device=_dev(generator, x)).to(x.device)


def _shift(x: Tensor, s: Tensor, dim: int, k: int) -> Tensor:
    """Zero-filled shift ``out[..., i, ...] = x[..., i - s, ...]`` along example dim ``dim`` (< 0),
    ``s`` of shape ``lead``; positions whose source falls outside the example become 0."""
    n = x.shape[dim]
    view = [1] * k
    view[k + dim] = n
    idx = (torch.arange(n, device=x.device) - s.unsqueeze(-1)).reshape(*s.shape, *view)
    valid = (idx >= 0) & (idx < n)
    return x.gather(dim, idx.clamp(0, n - 1).expand(x.shape)).masked_fill(~valid, 0)


def _check_int(name: str, option: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{name}: {option} must be an integer >= {low}, got {value!r}")


def _check_prob(name: str, option: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ConfigError(f"{name}: {option} must be a probability in [0, 1], got {value!r}")


# --- training transforms ------------------------------------------------------------

def hflip(p: float = 0.5) -> Transform:
    """Random horizontal flip (last dimension) of each image with probability ``p`` (in [0, 1])."""
    _check_prob("hflip", "p", p)

    def fn(x: Tensor, lead: tuple[int, ...], g: torch.Generator | None) -> Tensor:
        return torch.where((_uniform(lead, g, x) < p).reshape(*lead, 1, 1, 1), x.flip(-1), x)

    return Transform("hflip", 3, fn)


def crop(padding: int = 4) -> Transform:
    """Zero-pad each image by ``padding`` (int >= 0) on every side, then crop back at a random place.

    Implemented as a zero-filled shift by ``(dy, dx)``, each uniform in ``[-padding, padding]``:
    exactly the windows of the padded image. ``padding=0`` is the identity.
    """
    _check_int("crop", "padding", padding, 0)

    def fn(x: Tensor, lead: tuple[int, ...], g: torch.Generator | None) -> Tensor:
        if padding == 0:
            return x
        dy, dx = _integers(-padding, padding, lead, g, x), _integers(-padding, padding, lead, g, x)
        return _shift(_shift(x, dy, -2, 3), dx, -1, 3)

    return Transform("crop", 3, fn)


def cutout(size: int = 8, p: float = 1.0) -> Transform:
    """Zero a ``size`` x ``size`` square (all channels) at a random centre of each image, with probability ``p``.

    The centre is uniform over the image and the square is clipped at the borders, so fewer
    than ``size**2`` pixels are zeroed near an edge (DeVries & Taylor 2017, "Improved
    Regularization of Convolutional Neural Networks with Cutout").
    """
    _check_int("cutout", "size", size, 1)
    _check_prob("cutout", "p", p)

    def fn(x: Tensor, lead: tuple[int, ...], g: torch.Generator | None) -> Tensor:
        h, w = x.shape[-2:]
        top = _integers(0, h - 1, lead, g, x).unsqueeze(-1) - size // 2
        left = _integers(0, w - 1, lead, g, x).unsqueeze(-1) - size // 2
        rows, cols = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
        in_rows, in_cols = (rows >= top) & (rows < top + size), (cols >= left) & (cols < left + size)  # (*lead, H|W)
        mask = in_rows.unsqueeze(-1) & in_cols.unsqueeze(-2)  # (*lead, H, W)
        if p < 1:
            mask = mask & (_uniform(lead, g, x) < p).reshape(*lead, 1, 1)
        return x.masked_fill(mask.unsqueeze(-3), 0)

    return Transform("cutout", 3, fn)


def _signal_shift(name: str, amount: int) -> Transform:
    def fn(x: Tensor, lead: tuple[int, ...], g: torch.Generator | None) -> Tensor:
        return _shift(x, _integers(-amount, amount, lead, g, x), -1, 2) if amount else x

    return Transform(name, 2, fn)


def shift(max_shift: int = 4) -> Transform:
    """Shift each signal along L by a random integer in ``[-max_shift, max_shift]``, zero-filled.

    Zero-filled rather than circular: a circular shift would join the signal's two ends,
    which never happens in real data. Positive shifts move content to later positions.
    """
    _check_int("shift", "max_shift", max_shift, 0)
    return _signal_shift("shift", max_shift)


def crop1d(padding: int = 4) -> Transform:
    """Zero-pad each signal by ``padding`` at both ends of L, then crop back at a random place.

    Same distribution as ``shift(max_shift=padding)`` (a window of the padded signal is a
    zero-filled shift); both names exist to match the image vocabulary.
    """
    _check_int("crop1d", "padding", padding, 0)
    return _signal_shift("crop1d", padding)


AUGMENTS: dict[str, Callable[..., Transform]] = {"hflip": hflip, "crop": crop, "cutout": cutout, "shift": shift, "crop1d": crop1d}


# --- test-time transforms (deterministic) -------------------------------------------

def _tta_shift(offset: int = 0) -> Transform:
    if isinstance(offset, bool) or not isinstance(offset, int):
        raise ConfigError(f"shift: offset must be an integer, got {offset!r}")
    return Transform("shift", 2, lambda x, lead, g: _shift(
        x, torch.full(lead, offset, dtype=torch.long, device=x.device), -1, 2))


TTA_TRANSFORMS: dict[str, Callable[..., Transform]] = {
    "identity": lambda: Transform("identity", None, lambda x, lead, g: x),
    "hflip": lambda: Transform("hflip", 3, lambda x, lead, g: x.flip(-1)),
    "shift": _tta_shift,
}


def _parse(specs: Any, table: Mapping[str, Callable[..., Transform]], what: str) -> list[Transform]:
    specs = [] if specs is None else [specs] if isinstance(specs, (str, Mapping)) else specs
    if not isinstance(specs, Sequence):
        raise ConfigError(f"{what} must be a list of transforms, got {specs!r}")
    out = []
    for spec in specs:
        spec = {"name": spec} if isinstance(spec, str) else spec
        if not (isinstance(spec, Mapping) and "name" in spec):
            raise ConfigError(f"{what} entries must be a name or {{name: ..., <option>: ...}}, got {spec!r}")
        opts = {k: v for k, v in spec.items() if k != "name"}
        key = str(spec["name"]).lower()
        if key not in table:
            raise ConfigError(f"unknown {what} transform {spec['name']!r}; valid: {', '.join(sorted(table))}")
        valid = list(inspect.signature(table[key]).parameters)
        for opt in opts:
            if opt not in valid:
                raise ConfigError(f"{what} transform {key!r} got unknown option {opt!r}; "
                                  f"valid: {', '.join(valid) or '(none)'}")
        out.append(table[key](**opts))
    return out


def check_augment_spec(specs: Any) -> None:
    """Validate an ``augment`` list (names, options, values) without knowing the data.

    Raises:
        ConfigError: unknown transform (valid names listed), unknown option (the
            transform's valid options listed) or an option value out of range.
    """
    _parse(specs, AUGMENTS, "augment")


def build_augment(specs: Any, example_shape: Sequence[int]) -> Compose | None:
    """Build the training augmentation ``(x, generator=None) -> x`` from a spec list.

    Args:
        specs: e.g. ``["hflip", {"name": "crop", "padding": 4}, {"name": "cutout", "size": 8}]``
            for images or ``[{"name": "shift", "max_shift": 4}]`` for signals; names in
            :data:`AUGMENTS`, options are the factories' arguments.
        example_shape: one example's shape, ``(C, H, W)`` or ``(C, L)``.

    Returns:
        The composition (a :class:`Compose`), or ``None`` for an empty list. It maps
        ``(*lead, *example_shape)`` to the same shape.

    Raises:
        ConfigError: a bad spec (see :func:`check_augment_spec`).
        DataError: a transform does not fit the examples ("hflip needs image examples
            (C, H, W); got examples of shape (1, 40)").
    """
    transforms = _parse(specs, AUGMENTS, "augment")
    return Compose(transforms, example_shape) if transforms else None


def check_tta_spec(specs: Any) -> None:
    """Validate a ``tta`` list (``identity``, ``hflip``, ``{name: shift, offset: k}``); ConfigError if bad."""
    _parse(specs, TTA_TRANSFORMS, "tta")


def build_tta(specs: Any, example_shape: Sequence[int]) -> list[Compose]:
    """Build deterministic test-time transforms whose predictions are averaged.

    Args:
        specs: names in :data:`TTA_TRANSFORMS`: ``identity``, ``hflip`` (always flips images),
            ``{"name": "shift", "offset": k}`` (signals, zero-filled, positive k moves content later).
        example_shape: one example's shape.

    Returns:
        One callable ``x -> x`` per entry (shape kept); ``[identity]`` for an empty list.

    Raises:
        ConfigError: a bad spec. DataError: a transform does not fit the examples.
    """
    transforms = _parse(specs, TTA_TRANSFORMS, "tta") or [TTA_TRANSFORMS["identity"]()]
    return [Compose([t], example_shape) for t in transforms]


def mixup(x: Tensor, y: Tensor, alpha: float, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Mix each example with a random partner of the same batch (Zhang et al. 2018, "mixup").

    Args:
        x: float inputs, shape ``(*lead, *example)`` with ``lead`` ``(B,)`` or ``(M, B)``.
        y: integer labels, shape ``lead`` (fixes ``lead``; labels are not mixed here).
        alpha: the Beta(alpha, alpha) parameter, > 0.
        generator: source of all randomness (``None``: torch's global generator).

    Returns:
        ``(x_mixed, perm, lam)``: ``x_mixed = lam * x + (1 - lam) * x[perm]`` along the batch
        axis, same shape as ``x``; ``perm`` int64 of shape ``lead``, a permutation of the batch
        positions (one per member slice when ``lead`` is ``(M, B)``); ``lam`` of shape
        ``lead[:-1]`` (a scalar tensor for a shared batch, ``(M,)`` otherwise), in [0, 1].
        A loss uses them as ``lam * L(out, y) + (1 - lam) * L(out, y.gather(-1, perm))``
        (per member when ``lam`` has shape ``(M,)``).

    Raises:
        ConfigError: ``alpha`` is not > 0. DataError: ``y``'s shape is not ``x``'s lead.

    Note:
        ``torch.distributions`` takes no generator, so Beta draws come from a NumPy generator
        seeded with an integer drawn from ``generator``: deterministic, no global state touched.
    """
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
        raise ConfigError(f"mixup: alpha must be a number > 0, got {alpha!r}")
    lead = tuple(y.shape)
    if len(lead) not in (1, 2) or x.ndim <= len(lead) or tuple(x.shape[: len(lead)]) != lead:
        raise DataError(f"mixup needs labels of shape (B,) or (M, B) matching the inputs' leading "
                        f"dimensions; got inputs {tuple(x.shape)} and labels {lead}")
    if not x.is_floating_point():
        raise DataError(f"mixup needs floating-point inputs, got {x.dtype}")
    dev = _dev(generator, x)
    perm = torch.rand(lead, generator=generator, device=dev).argsort(dim=-1).to(x.device)
    seed = int(torch.randint(0, 2**62, (), generator=generator, device=dev))
    lam = torch.as_tensor(np.random.default_rng(seed).beta(alpha, alpha, size=lead[:-1]), dtype=x.dtype, device=x.device)
    k = x.ndim - len(lead)
    partner = torch.take_along_dim(x, perm.reshape(*lead, *[1] * k), dim=len(lead) - 1)
    lam_x = lam.reshape(*lead[:-1], *[1] * (k + 1))
    return lam_x * x + (1 - lam_x) * partner, perm, lam
