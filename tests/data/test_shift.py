"""Corruption suite: identity at severity 0, monotone severities, determinism, hand-computed values, errors."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ensemblekit.data import shift
from ensemblekit.data.registry import mnist1d
from ensemblekit.data.shift import (
    CORRUPTIONS, SEVERITIES, Corruption, Stats, corrupt, corruptions_for, default_corruptions, distortion,
    mnist1d_shifted, register_corruption,
)
from ensemblekit.errors import ConfigError, DataError

IMAGE_SUITE = ["gaussian_noise", "shot_noise", "impulse_noise", "gaussian_blur", "contrast", "brightness",
               "pixelate", "rotation", "translation"]
SIGNAL_SUITE = ["gaussian_noise", "correlated_noise", "time_shift", "time_scale", "amplitude_scale"]
DETERMINISTIC = {"gaussian_blur", "contrast", "brightness", "pixelate"}  # no random draws
UNIT = Stats(0.0, 1.0, 0.25)  # images already in [0, 1] units


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def smooth_images(n: int = 64, size: int = 16, seed: int = 0) -> torch.Tensor:
    """Random images in [0, 1] with structure a few pixels wide (blur and pixelate change them measurably)."""
    return F.interpolate(torch.rand(n, 1, 6, 6, generator=gen(seed)), size=(size, size), mode="bilinear", align_corners=False)


def smooth_signals(n: int = 64, length: int = 40, seed: int = 0) -> torch.Tensor:
    """Random series correlated over a few samples (a time shift changes them measurably)."""
    k = torch.exp(-0.5 * (torch.arange(-6, 7.0) / 2) ** 2)
    return F.conv1d(torch.randn(n, 1, length + 12, generator=gen(seed)), (k / k.sum()).view(1, 1, -1))


def batch_for(name: str) -> list[torch.Tensor]:
    """The batches ``name`` applies to: an image batch, a signal batch or both."""
    c = CORRUPTIONS.get(name)
    out = [torch.rand(6, 2, 8, 8, generator=gen(1))] if c.applies_to((1, 8, 8)) else []
    return out + ([torch.randn(6, 2, 40, generator=gen(2))] if c.applies_to((1, 40)) else [])


ALL = CORRUPTIONS.names()
CASES = [(n, x.ndim) for n in ALL for x in batch_for(n)]


def case_batch(name: str, ndim: int) -> torch.Tensor:
    return next(x for x in batch_for(name) if x.ndim == ndim)


# --- registry and suites ------------------------------------------------------------------

def test_suites_and_registry():
    assert default_corruptions((1, 8, 8)) == IMAGE_SUITE
    assert default_corruptions((3, 32, 32)) == IMAGE_SUITE
    assert default_corruptions((1, 40)) == SIGNAL_SUITE
    assert SEVERITIES == (1, 2, 3, 4, 5)
    assert corruptions_for((1, 8, 8)) == sorted(IMAGE_SUITE)
    assert corruptions_for((1, 40)) == sorted(SIGNAL_SUITE)
    assert set(ALL) == set(IMAGE_SUITE) | set(SIGNAL_SUITE)
    assert CORRUPTIONS.get("gaussian_noise").kind == "any"
    assert CORRUPTIONS.get("rotation").kind == "image" and CORRUPTIONS.get("time_shift").kind == "signal"
    for name in ALL:
        c = CORRUPTIONS.get(name)
        assert isinstance(c, Corruption) and c.name == name
        assert "\n" not in c.description and any(ch.isdigit() for ch in c.description)
    assert default_corruptions((40,)) == ["gaussian_noise", "amplitude_scale"]  # feature vectors: the position-free ones
    assert corruptions_for((40,)) == ["amplitude_scale", "gaussian_noise"]
    with pytest.raises(DataError, match=r"\(C, H, W\), \(C, L\) or \(D,\)"):
        default_corruptions((2, 3, 4, 5))


def test_register_corruption_rejects_bad_kind_and_taken_name():
    with pytest.raises(ConfigError, match="image, signal, any"):
        register_corruption("warp", "video", "x")
    with pytest.raises(ValueError, match="already registered"):
        register_corruption("rotation", "image", "again")(lambda x, s, g, st: x)


# --- identity, shapes, determinism --------------------------------------------------------

@pytest.mark.parametrize("name, ndim", CASES)
def test_severity_zero_is_the_identity(name, ndim):
    x = case_batch(name, ndim)
    out = corrupt(x, name, 0)
    assert torch.equal(out, x) and out is not x and out.data_ptr() != x.data_ptr()


@pytest.mark.parametrize("name, ndim", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_dtype_kept_and_finite(name, ndim, dtype):
    x = case_batch(name, ndim).to(dtype)
    for s in SEVERITIES:
        out = corrupt(x, name, s, seed=3)
        assert out.shape == x.shape and out.dtype == dtype
        assert torch.isfinite(out).all()
        assert not torch.equal(out, x)


@pytest.mark.parametrize("name, ndim", CASES)
def test_deterministic_per_seed(name, ndim):
    x = case_batch(name, ndim)
    state = torch.get_rng_state()
    a, b, c = corrupt(x, name, 3, seed=7), corrupt(x, name, 3, seed=7), corrupt(x, name, 3, seed=8)
    assert torch.equal(torch.get_rng_state(), state)  # torch's global generator is never used
    assert torch.equal(a, b)
    assert torch.equal(a, c) if name in DETERMINISTIC else not torch.equal(a, c)
    # the severity is part of the seed: severities draw independently
    assert not torch.equal(corrupt(x, name, 2, seed=7), a)


@pytest.mark.parametrize("name, ndim", CASES)
def test_distortion_grows_strictly_with_severity(name, ndim):
    x = smooth_images() if ndim == 4 else smooth_signals()
    d = [distortion(x, corrupt(x, name, s, seed=0)) for s in SEVERITIES]
    assert all(b > a * 1.01 for a, b in zip(d, d[1:])), d
    assert d[0] > 0.005


@pytest.mark.parametrize("name", IMAGE_SUITE)
def test_image_corruptions_are_affine_equivariant(name):
    """Dataset-agnostic units: corrupting 4 x + 3 is 4 * (corrupted x) + 3 (same seed)."""
    x = smooth_images(8, 12)
    assert torch.allclose(corrupt(4 * x + 3, name, 3), 4 * corrupt(x, name, 3) + 3, atol=1e-4)


@pytest.mark.parametrize("name", SIGNAL_SUITE)
def test_signal_corruptions_scale_with_std(name):
    x = smooth_signals(8)
    assert torch.allclose(corrupt(5 * x, name, 4), 5 * corrupt(x, name, 4), atol=1e-5)


def test_explicit_stats_are_used():
    x = torch.full((4, 1, 10, 10), 5.0)  # u = 0.5 in the units of [0, 10]
    out = corrupt(x, "gaussian_noise", 2, stats=Stats(0.0, 10.0, 1.0))  # sigma 0.12 units = 1.2 here
    assert math.isclose(float((out - x).std()), 1.2, rel_tol=0.1)


# --- hand-computed values -----------------------------------------------------------------

def test_brightness_adds_b_and_clips():
    for s, b in zip(SEVERITIES, (0.1, 0.2, 0.3, 0.4, 0.5)):
        assert torch.allclose(corrupt(torch.full((2, 1, 4, 4), 0.2), "brightness", s, stats=UNIT), torch.tensor(0.2 + b))
        assert torch.allclose(corrupt(torch.full((2, 1, 4, 4), 0.8), "brightness", s, stats=UNIT), torch.tensor(min(1.0, 0.8 + b)))
    # the units follow the stats: u = 0.2 in [-1, 1] data is x = -0.6; u + 0.1 maps back to -0.4
    out = corrupt(torch.full((1, 1, 3, 3), -0.6), "brightness", 1, stats=Stats(-1.0, 1.0, 0.5))
    assert torch.allclose(out, torch.tensor(-0.4))


def test_contrast_keeps_each_mean_and_scales_deviations():
    x = torch.rand(5, 3, 8, 8, generator=gen(4))
    m = x.mean(dim=(2, 3), keepdim=True)
    for s, c in zip(SEVERITIES, (0.4, 0.3, 0.2, 0.1, 0.05)):
        out = corrupt(x, "contrast", s, stats=UNIT)
        assert torch.allclose(out.mean(dim=(2, 3), keepdim=True), m, atol=1e-6)
        assert torch.allclose(out - m, c * (x - m), atol=1e-6)


def test_amplitude_scale_is_exactly_f_or_one_over_f():
    x = torch.randn(64, 2, 40, generator=gen(5))
    for s, f in zip(SEVERITIES, (1.2, 1.5, 2.0, 2.5, 3.0)):
        out = corrupt(x, "amplitude_scale", s)
        up = (out == x * f).flatten(1).all(1)
        down = (out == x * (1 / f)).flatten(1).all(1)
        assert (up | down).all() and up.any() and down.any()


def test_time_shift_equals_a_hand_shift_with_edge_fill():
    x = torch.randn(32, 2, 40, generator=gen(6))
    for s, k in zip(SEVERITIES, (1, 2, 4, 6, 8)):  # round(f * 40) for f = 0.025, 0.05, 0.1, 0.15, 0.2
        later = torch.cat([x[..., :1].expand(-1, -1, k), x[..., :-k]], -1)  # content moves k samples later
        earlier = torch.cat([x[..., k:], x[..., -1:].expand(-1, -1, k)], -1)
        out = corrupt(x, "time_shift", s)
        is_later, is_earlier = (out == later).flatten(1).all(1), (out == earlier).flatten(1).all(1)
        assert (is_later | is_earlier).all() and is_later.any() and is_earlier.any()


def test_time_scale_of_a_ramp_is_the_rescaled_ramp():
    length = 41
    x = torch.arange(length, dtype=torch.float32).expand(16, 1, length).contiguous()
    i = torch.arange(length, dtype=torch.float32)
    for s, a in zip(SEVERITIES, (1.05, 1.1, 1.2, 1.3, 1.5)):
        out = corrupt(x, "time_scale", s)
        stretched, squeezed = ((20 + (i - 20) / f).clamp(0, length - 1) for f in (a, 1 / a))
        is_st = torch.isclose(out, stretched, atol=1e-5).flatten(1).all(1)
        is_sq = torch.isclose(out, squeezed, atol=1e-5).flatten(1).all(1)
        assert (is_st | is_sq).all() and is_st.any() and is_sq.any()
        assert (out[..., 20] == 20).all()  # the centre stays put


def test_pixelate_block_averages():
    coarse = torch.rand(3, 2, 4, 4, generator=gen(7))
    x = coarse.repeat_interleave(2, -2).repeat_interleave(2, -1)  # 2x2-block-constant 8x8
    assert torch.equal(corrupt(x, "pixelate", 1), x)  # b = 2: the image itself
    blocks = x.reshape(3, 2, 2, 4, 2, 4).mean(dim=(3, 5))  # b = 4 (severity 3): exact 4x4 block means
    assert torch.allclose(corrupt(x, "pixelate", 3), blocks.repeat_interleave(4, -2).repeat_interleave(4, -1), atol=1e-6)
    ramp = torch.arange(8.0).expand(1, 1, 8, 8)  # b = 5 (severity 4): blocks 0..4 and 5..7 along each row
    assert torch.allclose(corrupt(ramp, "pixelate", 4)[0, 0, 0], torch.tensor([2.0] * 5 + [6.0] * 3))


def test_rotation_and_translation_keep_a_constant_interior():
    x = torch.full((16, 1, 16, 16), 0.7)
    for name in ("rotation", "translation"):
        for s in SEVERITIES:
            out = corrupt(x, name, s, stats=UNIT)
            assert torch.allclose(out[..., 7:9, 7:9], torch.tensor(0.7), atol=1e-6)
            assert out.min() >= 0 and out.max() <= 0.7 + 1e-6
        assert (out.flatten(1).min(1).values < 0.5).all()  # severity 5 reveals the background lo = 0 in every image


def test_rotation_turns_by_the_table_angle():
    """A centred bar rotated by +-30 degrees: its second-moment orientation is +-30 degrees."""
    x = torch.zeros(8, 1, 33, 33)
    x[..., 16, 4:29] = 1.0
    out = corrupt(x, "rotation", 5, stats=UNIT)[:, 0]
    yy, xx = torch.meshgrid(torch.arange(33.0) - 16, torch.arange(33.0) - 16, indexing="ij")
    cxy, cxx, cyy = ((out * v).sum((1, 2)) for v in (xx * yy, xx * xx, yy * yy))
    angle = torch.rad2deg(0.5 * torch.atan2(2 * cxy, cxx - cyy)).abs()
    assert torch.allclose(angle, torch.tensor(30.0), atol=0.5)


def test_translation_moves_by_the_table_fraction():
    x = torch.zeros(32, 1, 41, 41)
    x[..., 18:23, 18:23] = 1.0
    out = corrupt(x, "translation", 4, stats=UNIT)[:, 0]  # f = 0.2 of 41 pixels
    grid = torch.arange(41.0) - 20
    dy = (out.sum(2) * grid).sum(1) / out.sum((1, 2))
    dx = (out.sum(1) * grid).sum(1) / out.sum((1, 2))
    assert torch.allclose(torch.hypot(dx, dy), torch.tensor(0.2 * 41), atol=0.05)


def test_blur_keeps_constants_and_spreads_a_point_symmetrically():
    assert torch.allclose(corrupt(torch.full((2, 1, 9, 9), 0.3), "gaussian_blur", 5, stats=UNIT), torch.tensor(0.3))
    x = torch.zeros(1, 1, 15, 15)
    x[..., 7, 7] = 1.0
    out = corrupt(x, "gaussian_blur", 5)[0, 0]
    assert math.isclose(float(out.sum()), 1.0, rel_tol=1e-6)
    assert torch.allclose(out, out.flip(0)) and torch.allclose(out, out.T)
    t = torch.arange(-5, 6.0)
    k = torch.exp(-0.5 * (t / 1.5) ** 2)  # sigma 1.5, radius ceil(4.5) = 5
    k = k / k.sum()
    assert torch.allclose(out[2:13, 2:13], torch.outer(k, k), atol=1e-7)


def test_noise_strengths_match_the_tables():
    grey = torch.full((4, 1, 50, 50), 0.5)
    assert math.isclose(float((corrupt(grey, "gaussian_noise", 1, stats=UNIT) - grey).std()), 0.08, rel_tol=0.05)
    for s, rate in zip(SEVERITIES, (60, 25, 12, 5, 3)):
        out = corrupt(grey, "shot_noise", s, stats=UNIT) * rate
        assert torch.allclose(out, out.round(), atol=1e-4)  # Poisson counts / rate
    for s, amount in zip(SEVERITIES, (0.03, 0.06, 0.09, 0.17, 0.27)):
        out = corrupt(grey, "impulse_noise", s, stats=UNIT)
        hit = out != grey
        assert abs(float(hit.float().mean()) - amount) < 0.015
        assert ((out[hit] == 0) | (out[hit] == 1)).all() and (out[hit] == 0).any() and (out[hit] == 1).any()
    x = torch.randn(64, 1, 200, generator=gen(8)) * 3
    std = float(x.std(correction=0))
    for s, sigma in zip(SEVERITIES, (0.1, 0.2, 0.35, 0.5, 0.75)):
        for name in ("gaussian_noise", "correlated_noise"):
            noise = corrupt(x, name, s) - x
            assert math.isclose(float(noise.std()), sigma * std, rel_tol=0.08), (name, s)
    white, corr = corrupt(x, "gaussian_noise", 3) - x, corrupt(x, "correlated_noise", 3) - x

    def lag1(v: torch.Tensor) -> float:
        return float((v[..., 1:] * v[..., :-1]).mean() / v.pow(2).mean())

    assert abs(lag1(white)) < 0.05 and lag1(corr) > 0.9  # sigma = L/20 = 10 samples: smooth noise


# --- errors -------------------------------------------------------------------------------

@pytest.mark.parametrize("severity", [6, -1, 1.5, True, "2"])
def test_bad_severity_is_a_config_error_with_the_range(severity):
    with pytest.raises(ConfigError, match=r"severity must be an integer in 0\.\.5"):
        corrupt(torch.rand(2, 1, 4, 4), "contrast", severity)
    with pytest.raises(ConfigError, match=r"0\.\.5"):
        mnist1d_shifted(severity, 10)


def test_errors():
    with pytest.raises(ConfigError, match="unknown corruption 'fog'.*valid: amplitude_scale"):
        corrupt(torch.rand(2, 1, 4, 4), "fog", 1)
    with pytest.raises(ConfigError, match=r"corruption 'rotation' is for images \(N, C, H, W\); got x of shape \(2, 1, 40\)"):
        corrupt(torch.randn(2, 1, 40), "rotation", 1)
    with pytest.raises(ConfigError, match=r"'time_shift' is for signals \(N, C, L\)"):
        corrupt(torch.rand(2, 1, 4, 4), "time_shift", 1)
    with pytest.raises(ConfigError, match="is for images"):
        corrupt(torch.randn(2, 40), "gaussian_noise_missing" if False else "rotation", 1)
    with pytest.raises(DataError, match="floating-point"):
        corrupt(torch.ones(2, 1, 4, 4, dtype=torch.int64), "contrast", 1)
    with pytest.raises(DataError, match="finite"):
        corrupt(torch.tensor([[[0.0, float("nan")]]]), "gaussian_noise", 1)
    with pytest.raises(DataError, match="hi > stats.lo"):
        corrupt(torch.full((2, 1, 4, 4), 0.5), "contrast", 1)  # constant data: no [0, 1] units
    with pytest.raises(ConfigError, match="seed must be an integer"):
        corrupt(torch.rand(2, 1, 4, 4), "contrast", 1, seed=1.5)
    with pytest.raises(ConfigError, match="lo <= hi"):
        Stats(1.0, 0.0, 1.0)
    with pytest.raises(ConfigError, match="num_examples must be an integer >= 1"):
        mnist1d_shifted(1, 0)


def test_stats_and_distortion_values():
    st = Stats.of(torch.tensor([[1.0, 3.0], [5.0, 7.0]]))
    assert (st.lo, st.hi) == (1.0, 7.0) and math.isclose(st.std, math.sqrt(5.0))
    assert math.isclose(distortion(torch.tensor([0.0, 2.0]), torch.tensor([1.0, 2.0])), 1 / math.sqrt(2))
    assert distortion(torch.tensor([0.0, 2.0]), torch.tensor([0.0, 2.0])) == 0.0
    with pytest.raises(DataError, match="one shape"):
        distortion(torch.zeros(2), torch.zeros(3))
    with pytest.raises(DataError, match="constant"):
        distortion(torch.ones(3), torch.zeros(3))
    with pytest.raises(DataError, match="non-empty"):
        Stats.of(torch.zeros(0))


# --- shifted MNIST-1D ---------------------------------------------------------------------

def test_mnist1d_shifted_shapes_determinism_and_freshness():
    x, y = mnist1d_shifted(0, 205, seed=0)
    assert x.shape == (205, 1, 40) and x.dtype == torch.float32 and y.shape == (205,) and y.dtype == torch.int64
    assert int(y.min()) >= 0 and int(y.max()) <= 9 and len(set(y.tolist())) == 10
    x2, y2 = mnist1d_shifted(0, 205, seed=0)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    x2[:] = 0  # callers get copies: the cache is untouched
    assert torch.equal(mnist1d_shifted(0, 205, seed=0)[0], x)
    assert not torch.equal(mnist1d_shifted(0, 205, seed=1)[0], x)
    data = mnist1d()  # the published examples (generator seed 42): train, validation and test
    published = torch.cat([data.train.x, data.val.x, data.test.x]).reshape(-1, 40)
    assert float(torch.cdist(x.reshape(-1, 40), published).min()) > 1e-3  # none of them reappears


def test_mnist1d_shifted_grows_with_severity_and_keeps_global_rng():
    shift._mnist1d_shifted_arrays.cache_clear()  # make_dataset really runs below
    random.seed(5)
    np.random.seed(5)
    np_state, py_state = np.random.get_state(), random.getstate()
    sets = [mnist1d_shifted(s, 150, seed=9) for s in range(6)]
    after = np.random.get_state()
    assert after[0] == np_state[0] and np.array_equal(after[1], np_state[1]) and after[2:] == np_state[2:]
    assert random.getstate() == py_state
    x0, y0 = sets[0]
    assert all(torch.equal(y, y0) for _, y in sets)  # paired draws: same labels, more noise
    d = [distortion(x0, x) for x, _ in sets[1:]]
    assert all(b > a for a, b in zip(d, d[1:])) and d[0] > 0.05, d


def test_feature_vectors_take_the_signal_form_of_the_position_free_corruptions():
    x = torch.randn(64, 12)
    assert torch.equal(corrupt(x, "gaussian_noise", 3, seed=5), corrupt(x.unsqueeze(1), "gaussian_noise", 3, seed=5, stats=Stats.of(x)).squeeze(1))
    ratio = corrupt(x, "amplitude_scale", 2) / x
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio))
    assert all(min(abs(r - 1.5), abs(r - 1 / 1.5)) < 1e-5 for r in ratio[:, 0].tolist())
    with pytest.raises(ConfigError, match="is for signals"):
        corrupt(x, "time_shift", 1)
