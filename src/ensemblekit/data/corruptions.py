"""The registered corruptions of :mod:`ensemblekit.data.shift`: images (N, C, H, W) and signals (N, C, L).

Each takes ``(x, severity 1..5, generator, stats)`` and returns the corrupted x (same shape and
dtype); its severity table is in its registered description. Units and determinism are those of
:mod:`ensemblekit.data.shift` (Hendrycks & Dietterich, ICLR 2019, for the image set).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import DataError
from .shift import Stats, register_corruption

__all__: list[str] = []  # everything here is reached through CORRUPTIONS


# --- random draws on the (CPU) generator, moved to x's device -----------------------------

def _rand(shape: Sequence[int], g: torch.Generator, x: Tensor, normal: bool = False) -> Tensor:
    """Uniform [0, 1) (or standard normal) draws of ``shape`` in x's dtype, on x's device."""
    return (torch.randn if normal else torch.rand)(tuple(shape), generator=g, dtype=x.dtype).to(x.device)


def _signs(g: torch.Generator, x: Tensor) -> Tensor:
    """One random sign (+1 or -1) per example, shape (N,)."""
    return (torch.randint(0, 2, (x.shape[0],), generator=g) * 2 - 1).to(device=x.device, dtype=x.dtype)


def _either(g: torch.Generator, x: Tensor, a: float, b: float) -> Tensor:
    """Per example, ``a`` or ``b`` with even odds, shape (N,) in x's dtype."""
    return torch.where(_signs(g, x) > 0, torch.tensor(a, dtype=x.dtype), torch.tensor(b, dtype=x.dtype)).to(x.device)


def _kernel(sigma: float, radius: int, x: Tensor) -> Tensor:
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def _to_unit(x: Tensor, stats: Stats) -> Tensor:
    if not stats.hi > stats.lo:
        raise DataError(f"image corruptions in [0, 1] units need stats.hi > stats.lo, got lo = hi = {stats.lo}; "
                        "pass stats=Stats(lo, hi, std) of the clean split")
    return (x - stats.lo) / (stats.hi - stats.lo)


def _from_unit(u: Tensor, stats: Stats) -> Tensor:
    return u * (stats.hi - stats.lo) + stats.lo


# --- image corruptions (N, C, H, W) -------------------------------------------------------

_IMAGE_SIGMA = (0.08, 0.12, 0.18, 0.26, 0.38)
_SHOT_RATE = (60.0, 25.0, 12.0, 5.0, 3.0)
_IMPULSE_AMOUNT = (0.03, 0.06, 0.09, 0.17, 0.27)
_BLUR_SIGMA = (0.4, 0.6, 0.8, 1.0, 1.5)
_CONTRAST = (0.4, 0.3, 0.2, 0.1, 0.05)
_BRIGHTNESS = (0.1, 0.2, 0.3, 0.4, 0.5)
_PIXELATE = (2, 3, 4, 5, 6)  # block size in pixels
_ROTATION_DEG = (6.0, 12.0, 18.0, 24.0, 30.0)
_TRANSLATION = (0.05, 0.1, 0.15, 0.2, 0.25)


def _image_gaussian_noise(x: Tensor, severity: int, g: torch.Generator, stats: Stats) -> Tensor:
    u = _to_unit(x, stats)
    return _from_unit((u + _IMAGE_SIGMA[severity - 1] * _rand(u.shape, g, u, normal=True)).clamp(0, 1), stats)


@register_corruption("shot_noise", "image", "clip(Poisson(u * r) / r), rate r = 60, 25, 12, 5, 3")
def shot_noise(x: Tensor, severity: int, g: torch.Generator, stats: Stats) -> Tensor:
    rate = _SHOT_RATE[severity - 1]
    lam = (_to_unit(x, stats).clamp(0, 1) * rate).cpu()
    return _from_unit((torch.poisson(lam, generator=g).to(x.device) / rate).clamp(0, 1), stats)


@register_corruption("impulse_noise", "image", "salt and pepper: each value becomes 0 or 1 (even odds) with probability 0.03, 0.06, 0.09, 0.17, 0.27")
def impulse_noise(x: Tensor, severity: int, g: torch.Generator, stats: Stats) -> Tensor:
    u = _to_unit(x, stats)
    hit = _rand(u.shape, g, u) < _IMPULSE_AMOUNT[severity - 1]
    salt = (_rand(u.shape, g, u) < 0.5).to(u.dtype)
    return _from_unit(torch.where(hit, salt, u), stats)


@register_corruption("gaussian_blur", "image", "separable Gaussian blur, reflect padding, sigma = 0.4, 0.6, 0.8, 1.0, 1.5 pixels (radius ceil(3 sigma))")
def gaussian_blur(x: Tensor, severity: int, g: torch.Generator, stats: Stats) -> Tensor:
    sigma = _BLUR_SIGMA[severity - 1]
    n, c, h, w = x.shape
    rh, rw = (min(math.ceil(3 * sigma), size - 1) for size in (h, w))  # reflect padding needs r < size
    z = F.pad(x.reshape(n * c, 1, h, w), (rw, rw, rh, rh), mode="reflect")
    z = F.conv2d(F.conv2d(z, _kernel(sigma, rh, x).reshape(1, 1, -1, 1)), _kernel(sigma, rw, x).reshape(1, 1, 1, -1))
    return z.reshape(n, c, h, w)


@register_corruption("contrast", "image", "clip((u - m) * c + m), m the per-image, per-channel mean, c = 0.4, 0.3, 0.2, 0.1, 0.05")
def contrast(x: Tensor, severity: int, g: torch.Generator, stats: Stats) -> Tensor:
    u = _to_unit(x, stats)
    m = u.mean(dim=(2, 3), keepdim=True)
    return _from_unit(((u - m) * _CONTRAST[severity - 1] + m).clamp(0, 1), stats)


@register_corruption("brightness", "image", "clip(u + b) in every channel, b = 0.1, 0.2, 0.3, 0.4, 0.5")
def brightness(x: Tensor, severity: int, g: torch.Generator, stats: Stats) -> Tensor:
    return _from_unit((_to_unit(x, stats) + _BRIGHTNESS[severity - 1]).clamp(0, 1), stats)


@register_corruption("pixelate", "image", "replace each aligned b x b pixel block (clipped at the far borders) by its mean, b = 2, 3, 4, 5, 6 pixels")
def pixelate(x: Tensor, severity: int, g: torch.Generator, stats: Stats) -> Tensor:
    h, w = x.shape[-2:]
    bh, bw = min(_PIXELATE[severity - 1], h), min(_PIXELATE[severity - 1], w)
    # area-downsample to ceil(H / b) x ceil(W / b) cells (partial cells average what they cover), nearest-upsample back
    small = F.avg_pool2d(x, (bh, bw), stride=(bh, bw), ceil_mode=True)
    return small.repeat_interleave(bh, -2).repeat_interleave(bw, -1)[..., :h, :w]


def _warp(x: Tensor, theta: Tensor, stats: Stats) -> Tensor:
    """Bilinear resampling ``out(p) = x(theta @ p)`` in normalised coordinates; outside the image is ``lo``."""
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x - stats.lo, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + stats.lo


@register_corruption("rotation", "image", "rotate about the centre by +-6, 12, 18, 24, 30 degrees (random sign per image), bilinear, background lo")
def rotation(x: Tensor, severity: int, g: torch.Generator, stats: Stats) -> Tensor:
    h, w = x.shape[-2:]
    angle = _signs(g, x) * math.radians(_ROTATION_DEG[severity - 1])
    cos, sin, zero = angle.cos(), angle.sin(), torch.zeros_like(angle)
    # a rotation in pixel units, written in normalised coordinates (x in W/2, y in H/2 units)
    theta = torch.stack([torch.stack([cos, -sin * h / w, zero], -1), torch.stack([sin * w / h, cos, zero], -1)], -2)
    return _warp(x, theta, stats)


@register_corruption("translation", "image", "shift by f = 0.05, 0.1, 0.15, 0.2, 0.25 of the image size in a uniformly random direction per image, bilinear, background lo")
def translation(x: Tensor, severity: int, g: torch.Generator, stats: Stats) -> Tensor:
    direction = 2 * math.pi * _rand((x.shape[0],), g, x)
    t = 2 * _TRANSLATION[severity - 1]  # the image spans 2 in normalised coordinates
    one, zero = torch.ones_like(direction), torch.zeros_like(direction)
    theta = torch.stack([torch.stack([one, zero, t * direction.cos()], -1),
                         torch.stack([zero, one, t * direction.sin()], -1)], -2)
    return _warp(x, theta, stats)


# --- signal corruptions (N, C, L) ---------------------------------------------------------

_SIGNAL_SIGMA = (0.1, 0.2, 0.35, 0.5, 0.75)
_TIME_SHIFT = (0.025, 0.05, 0.1, 0.15, 0.2)
_TIME_SCALE = (1.05, 1.1, 1.2, 1.3, 1.5)
_AMPLITUDE = (1.2, 1.5, 2.0, 2.5, 3.0)


@register_corruption("gaussian_noise", "any", "images: clip(u + N(0, s^2)), s = 0.08, 0.12, 0.18, 0.26, 0.38; "
                     "signals: x + N(0, (s * std)^2), s = 0.1, 0.2, 0.35, 0.5, 0.75")
def gaussian_noise(x: Tensor, severity: int, g: torch.Generator, stats: Stats) -> Tensor:
    if x.ndim == 4:
        return _image_gaussian_noise(x, severity, g, stats)
    return x + _SIGNAL_SIGMA[severity - 1] * stats.std * _rand(x.shape, g, x, normal=True)


@register_corruption("correlated_noise", "signal", "x + s * std * (white noise * Gaussian kernel of sigma max(1, L/20) samples, "
                     "unit variance), s = 0.1, 0.2, 0.35, 0.5, 0.75")
def correlated_noise(x: Tensor, severity: int, g: torch.Generator, stats: Stats) -> Tensor:
    n, c, length = x.shape
    sigma = max(1.0, length / 20)
    r = math.ceil(3 * sigma)
    k = _kernel(sigma, r, x)
    k = k / torch.linalg.vector_norm(k)  # unit L2 norm: smoothed unit white noise keeps variance 1
    white = _rand((n * c, 1, length + 2 * r), g, x, normal=True)  # 'valid' convolution: no edge effects
    noise = F.conv1d(white, k.reshape(1, 1, -1)).reshape(n, c, length)
    return x + _SIGNAL_SIGMA[severity - 1] * stats.std * noise


@register_corruption("time_shift", "signal", "shift by round(f * L) (>= 1) samples, f = 0.025, 0.05, 0.1, 0.15, 0.2, "
                     "random sign per example, edge values fill the gap")
def time_shift(x: Tensor, severity: int, g: torch.Generator, stats: Stats) -> Tensor:
    length = x.shape[-1]
    s = _signs(g, x).long() * max(1, math.floor(_TIME_SHIFT[severity - 1] * length + 0.5))  # round half up
    idx = (torch.arange(length, device=x.device) - s.unsqueeze(-1)).clamp(0, length - 1)  # out[i] = x[i - s]
    return x.gather(-1, idx.unsqueeze(1).expand(x.shape))


@register_corruption("time_scale", "signal", "stretch by a or compress by 1/a about the centre (random per example), "
                     "a = 1.05, 1.1, 1.2, 1.3, 1.5, linear interpolation, edges clamped")
def time_scale(x: Tensor, severity: int, g: torch.Generator, stats: Stats) -> Tensor:
    length = x.shape[-1]
    if length < 2:
        return x.clone()
    a = _TIME_SCALE[severity - 1]
    factor = _either(g, x, a, 1 / a).unsqueeze(-1)  # (N, 1)
    centre = (length - 1) / 2
    pos = (centre + (torch.arange(length, device=x.device, dtype=x.dtype) - centre) / factor).clamp(0, length - 1)
    i0 = pos.floor().long().clamp(max=length - 2)
    frac = (pos - i0).unsqueeze(1)
    left = x.gather(-1, i0.unsqueeze(1).expand(x.shape))
    right = x.gather(-1, (i0 + 1).unsqueeze(1).expand(x.shape))
    return left + frac * (right - left)


@register_corruption("amplitude_scale", "signal", "multiply by f or 1/f (random per example), f = 1.2, 1.5, 2, 2.5, 3")
def amplitude_scale(x: Tensor, severity: int, g: torch.Generator, stats: Stats) -> Tensor:
    f = _AMPLITUDE[severity - 1]
    return x * _either(g, x, f, 1 / f).reshape(-1, 1, 1)
