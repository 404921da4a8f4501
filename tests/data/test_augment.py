"""Batch augmentations: shapes, determinism, hand-computed values, per-example randomness, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ensemblekit.data.augment import (
    AUGMENTS, build_augment, build_tta, check_augment_spec, check_tta_spec, crop, cutout, hflip, mixup, shift,
)
from ensemblekit.errors import ConfigError, DataError

IMAGE_SPECS = ["hflip", {"name": "crop", "padding": 2}, {"name": "cutout", "size": 3}]
SIGNAL_SPECS = [{"name": "shift", "max_shift": 3}, {"name": "crop1d", "padding": 2}]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def ramp_image() -> torch.Tensor:
    return torch.arange(16.0).reshape(1, 4, 4)


@pytest.mark.parametrize("lead", [(6,), (2, 5)])
@pytest.mark.parametrize("specs, example", [(IMAGE_SPECS, (2, 8, 8)), (SIGNAL_SPECS, (1, 12))])
def test_shape_kept_and_deterministic(lead, specs, example):
    aug = build_augment(specs, example)
    x = torch.randn(*lead, *example)
    out = aug(x, gen(0))
    assert out.shape == x.shape
    assert torch.equal(out, aug(x, gen(0)))
    assert not torch.equal(out, aug(x, gen(1)))


def test_empty_spec_builds_nothing_and_global_rng_works():
    assert build_augment([], (1, 8)) is None
    out = build_augment(["hflip"], (1, 4, 4))(torch.randn(3, 1, 4, 4))  # generator=None: torch's global RNG
    assert out.shape == (3, 1, 4, 4)


def test_hflip_probabilities():
    x = torch.randn(5, 2, 3, 4)
    assert torch.equal(hflip(p=1.0)(x, gen()), x.flip(-1))
    assert torch.equal(hflip(p=0.0)(x, gen()), x)


def test_hflip_draws_per_example():
    x = ramp_image().expand(32, 1, 4, 4)
    out = hflip(p=0.5)(x, gen())
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    kept = (out == x).flatten(1).all(1)
    assert torch.all(flipped ^ kept)
    assert 0 < int(flipped.sum()) < 32


def test_crop_padding_zero_is_identity():
    x = torch.randn(4, 3, 5, 5)
    assert torch.equal(crop(padding=0)(x, gen()), x)


def test_crop_hand_case():
    # Seed 0 draws the shifts (dy, dx) = (+1, -1), (-1, 0), (+1, -1): windows of the
    # zero-padded 6x6 image at offsets (0, 2), (2, 1), (0, 2).
    out = crop(padding=1)(ramp_image().expand(3, 1, 4, 4), gen(0))
    down_left = torch.tensor([[0, 0, 0, 0], [1, 2, 3, 0], [5, 6, 7, 0], [9, 10, 11, 0.0]])
    up = torch.tensor([[4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15], [0, 0, 0, 0.0]])
    assert torch.equal(out[:, 0], torch.stack([down_left, up, down_left]))


def test_crop_outputs_are_windows_of_the_padded_input():
    x = torch.arange(1.0, 26.0).reshape(1, 5, 5).expand(40, 1, 5, 5)
    out = crop(padding=2)(x, gen(3))
    padded = F.pad(x[0], (2, 2, 2, 2))
    windows = torch.stack([padded[:, i:i + 5, j:j + 5] for i in range(5) for j in range(5)])  # (25, 1, 5, 5)
    match = (out[:, None] == windows[None]).flatten(2).all(2)  # (40, 25)
    assert torch.all(match.sum(1) == 1)
    assert len(set(match.float().argmax(1).tolist())) > 5  # per-example offsets


def test_cutout_zeros_a_clipped_square():
    size = 4
    x = torch.ones(64, 2, 12, 12)
    out = cutout(size=size)(x, gen(0))
    zero = out == 0
    assert torch.equal(zero[:, 0], zero[:, 1])  # same square on every channel
    counts = zero[:, 0].flatten(1).sum(1)
    assert torch.all((counts >= 1) & (counts <= size * size))
    interior = 0
    for mask, n in zip(zero[:, 0], counts):
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        # the zeros always form one rectangle
        assert n == len(rows) * len(cols) and rows[-1] - rows[0] + 1 == len(rows)
        if rows[0] > 0 and cols[0] > 0 and rows[-1] < 11 and cols[-1] < 11:
            interior += 1
            assert n == size * size
    assert interior > 10


def test_cutout_probability_zero_is_identity():
    x = torch.randn(4, 1, 6, 6)
    assert torch.equal(cutout(size=3, p=0.0)(x, gen()), x)


def test_shift_hand_case_and_zero_fill():
    ramp = torch.arange(1.0, 7.0).reshape(1, 6)
    out = shift(max_shift=2)(ramp.expand(3, 1, 6), gen(0))
    expected = torch.tensor([[0, 0, 1, 2, 3, 4], [0, 0, 1, 2, 3, 4], [0, 1, 2, 3, 4, 5.0]])
    assert torch.equal(out[:, 0], expected)
    many = shift(max_shift=2)(ramp.expand(50, 1, 6), gen(1))[:, 0]
    candidates = {s: torch.roll(F.pad(ramp[0], (2, 2)), s)[2:8] for s in range(-2, 3)}
    seen = {s for row in many for s, c in candidates.items() if torch.equal(row, c)}
    assert seen == set(range(-2, 3))


def test_members_get_different_transforms():
    x = torch.randn(1, 8, 3, 6, 6).expand(2, 8, 3, 6, 6)  # both members see the same batch
    out = build_augment(IMAGE_SPECS, (3, 6, 6))(x, gen(0))
    assert not torch.equal(out[0], out[1])


def test_wrong_example_rank():
    with pytest.raises(DataError, match=r"hflip needs image examples \(C, H, W\); got examples of shape \(1, 40\)"):
        build_augment(["hflip"], (1, 40))
    with pytest.raises(DataError, match="shift needs signal examples"):
        build_augment(["shift"], (1, 8, 8))
    with pytest.raises(DataError, match="cutout needs image examples"):
        cutout()(torch.randn(4, 1, 40), example_ndim=2)
    aug = build_augment(SIGNAL_SPECS, (1, 40))
    with pytest.raises(DataError, match=r"inputs of shape \(\*lead, 1, 40\).*got \(4, 1, 41\)"):
        aug(torch.randn(4, 1, 41))
    with pytest.raises(DataError, match="example_shape"):
        build_augment(["hflip"], ())


def test_bad_specs():
    with pytest.raises(ConfigError, match="unknown augment transform 'flip'; valid: crop, crop1d, cutout, hflip, shift"):
        check_augment_spec(["flip"])
    with pytest.raises(ConfigError, match="'crop' got unknown option 'pad'; valid: padding"):
        build_augment([{"name": "crop", "pad": 2}], (1, 4, 4))
    with pytest.raises(ConfigError, match=r"cutout: size must be an integer >= 1, got 0"):
        check_augment_spec([{"name": "cutout", "size": 0}])
    with pytest.raises(ConfigError, match=r"hflip: p must be a probability in \[0, 1\], got 1.5"):
        check_augment_spec([{"name": "hflip", "p": 1.5}])
    with pytest.raises(ConfigError, match="entries must be a name"):
        check_augment_spec([{"padding": 4}])
    check_augment_spec(["hflip", {"name": "crop", "padding": 4}, {"name": "cutout", "size": 8}])
    assert sorted(AUGMENTS) == ["crop", "crop1d", "cutout", "hflip", "shift"]


@pytest.mark.parametrize("lead", [(6,), (3, 6)])
def test_mixup(lead):
    x = torch.randn(*lead, 2, 5)
    y = torch.randint(0, 3, lead)
    mixed, perm, lam = mixup(x, y, alpha=0.4, generator=gen(0))
    assert mixed.shape == x.shape and perm.shape == lead and lam.shape == lead[:-1]
    assert perm.dtype == torch.long
    assert torch.equal(perm.sort(-1).values, torch.arange(lead[-1]).expand(lead))
    assert torch.all((lam >= 0) & (lam <= 1))
    lam_x = lam.reshape(*lead[:-1], 1, 1, 1)
    partner = x[perm] if len(lead) == 1 else x[torch.arange(lead[0])[:, None], perm]
    assert torch.equal(mixed, lam_x * x + (1 - lam_x) * partner)
    again = mixup(x, y, alpha=0.4, generator=gen(0))
    assert all(torch.equal(a, b) for a, b in zip((mixed, perm, lam), again))
    other = mixup(x, y, alpha=0.4, generator=gen(1))
    assert not torch.equal(other[2], lam)


def test_mixup_errors():
    x = torch.randn(4, 3)
    with pytest.raises(ConfigError, match="alpha must be a number > 0, got 0"):
        mixup(x, torch.zeros(4, dtype=torch.long), alpha=0)
    with pytest.raises(DataError, match="mixup needs labels"):
        mixup(x, torch.zeros(5, dtype=torch.long), alpha=0.2)


def test_tta_exact_values():
    img = ramp_image().expand(2, 1, 4, 4)
    identity, flip = build_tta(["identity", "hflip"], (1, 4, 4))
    assert torch.equal(identity(img), img)
    assert torch.equal(flip(img), img.flip(-1))
    (only,) = build_tta([], (1, 4, 4))
    assert torch.equal(only(img), img)
    sig = torch.arange(1.0, 6.0).reshape(1, 1, 5).expand(3, 1, 5)
    right, left = build_tta([{"name": "shift", "offset": 2}, {"name": "shift", "offset": -1}], (1, 5))
    assert torch.equal(right(sig)[0, 0], torch.tensor([0, 0, 1, 2, 3.0]))
    assert torch.equal(left(sig)[2, 0], torch.tensor([2, 3, 4, 5, 0.0]))


def test_tta_errors():
    with pytest.raises(ConfigError, match="unknown tta transform 'crop'; valid: hflip, identity, shift"):
        check_tta_spec(["crop"])
    with pytest.raises(ConfigError, match="offset must be an integer"):
        check_tta_spec([{"name": "shift", "offset": 0.5}])
    with pytest.raises(DataError, match="hflip needs image examples"):
        build_tta(["hflip"], (1, 40))
