"""Regression losses: hand values, beta-NLL's gradients at beta = 0 and 1, member independence,
shapes (M, B) and (M, B, D), and the engine's loss slot."""

from __future__ import annotations

import math

import pytest
import torch

from ensemblekit.data.batching import Batch
from ensemblekit.errors import ConfigError, DataError
from ensemblekit.training.regression_losses import beta_nll_per_member, gaussian_nll_per_member, mse_per_member, regression_loss


def raw_of(var: float) -> float:
    """The raw output whose softplus is ``var`` (inverse softplus)."""
    return math.log(math.expm1(var))


def point(mu: float = 1.0, var: float = 2.0) -> torch.Tensor:
    """One member, one example, D = 1: ``(1, 1, 2)`` raw outputs with ``softplus(raw) = var``."""
    return torch.tensor([[[mu, raw_of(var)]]], dtype=torch.float64, requires_grad=True)


def test_nll_at_a_hand_point():
    expected = 0.5 * (math.log(4 * math.pi) + 0.5)  # mu = 1, var = 2, y = 0
    got = gaussian_nll_per_member(point(), torch.zeros(1, dtype=torch.float64), min_var=0)
    assert got.shape == (1,)
    assert got.item() == pytest.approx(expected, rel=1e-12)
    # the floor is added to softplus: softplus(raw) = 2 - 0.5 with min_var 0.5 is var = 2 again
    floored = gaussian_nll_per_member(point(var=1.5), torch.zeros(1, dtype=torch.float64), min_var=0.5)
    assert floored.item() == pytest.approx(expected, rel=1e-12)


def test_beta_nll_values():
    y = torch.zeros(1, dtype=torch.float64)
    nll = 0.5 * (math.log(4 * math.pi) + 0.5)
    assert beta_nll_per_member(point(), y, beta=0, min_var=0).item() == pytest.approx(nll, rel=1e-12)
    assert beta_nll_per_member(point(), y, beta=0.5, min_var=0).item() == pytest.approx(math.sqrt(2) * nll, rel=1e-12)
    assert beta_nll_per_member(point(), y, beta=1, min_var=0).item() == pytest.approx(2 * nll, rel=1e-12)


def grads(beta: float | None) -> tuple[float, float]:
    """(d/dmu, d/draw) of the loss at mu = 1, var = 2, y = 0 (``None``: the plain NLL)."""
    out = point()
    y = torch.zeros(1, dtype=torch.float64)
    loss = gaussian_nll_per_member(out, y, min_var=0) if beta is None else beta_nll_per_member(out, y, beta=beta, min_var=0)
    loss.sum().backward()
    return out.grad[0, 0, 0].item(), out.grad[0, 0, 1].item()


def test_beta_nll_gradients_with_respect_to_the_mean():
    # NLL: d/dmu = (mu - y) / var = 1/2; beta = 1: var * (mu - y) / var = mu - y = 1
    nll_mu, _ = grads(None)
    assert nll_mu == pytest.approx(0.5, rel=1e-12)
    assert grads(0)[0] == pytest.approx(nll_mu, rel=1e-12)
    assert grads(1)[0] == pytest.approx(1.0, rel=1e-12)
    # beta = 1 is the mean's gradient of 0.5 * MSE on any data
    torch.manual_seed(0)
    raw = torch.randn(3, 7, 2, dtype=torch.float64)
    y = torch.randn(7, dtype=torch.float64)
    a = raw.clone().requires_grad_(True)
    beta_nll_per_member(a, y, beta=1, min_var=0).sum().backward()
    b = raw[..., :1].clone().requires_grad_(True)
    (0.5 * mse_per_member(b, y)).sum().backward()
    torch.testing.assert_close(a.grad[..., 0], b.grad[..., 0])


def test_beta_nll_gradient_with_respect_to_the_variance():
    # dNLL/dvar = 0.5 * (1/var - (y - mu)^2 / var^2) = 0.5 * (1/2 - 1/4) = 1/8; dvar/draw = sigmoid(raw) = 1 - e^-2
    dvar_draw = 1 - math.exp(-2)
    _, nll_raw = grads(None)
    assert nll_raw == pytest.approx(0.125 * dvar_draw, rel=1e-12)
    assert grads(0)[1] == pytest.approx(nll_raw, rel=1e-12)
    assert grads(1)[1] == pytest.approx(2 * nll_raw, rel=1e-12)  # var times the NLL's, var = 2
    assert grads(0.5)[1] == pytest.approx(math.sqrt(2) * nll_raw, rel=1e-12)


LOSSES = [
    lambda out, y: gaussian_nll_per_member(out, y),
    lambda out, y: beta_nll_per_member(out, y, beta=0.5),
    lambda out, y: mse_per_member(out[..., : out.shape[-1] // 2], y),
]


@pytest.mark.parametrize("loss", LOSSES)
def test_a_members_loss_reads_only_its_own_outputs(loss):
    torch.manual_seed(1)
    out = torch.randn(3, 6, 4, requires_grad=True)
    y = torch.randn(6, 2)
    full = loss(out, y)
    zeroed = out.detach().clone()
    zeroed[1] = 0
    assert torch.equal(loss(zeroed, y)[[0, 2]], full.detach()[[0, 2]])
    full[0].backward()
    assert out.grad[1:].abs().sum() == 0 and out.grad[0].abs().sum() > 0


@pytest.mark.parametrize("loss", LOSSES)
def test_shapes_of_one_and_of_d_targets(loss):
    torch.manual_seed(2)
    m, b, d = 3, 5, 2
    out1 = torch.randn(m, b, 2)  # D = 1
    y1 = torch.randn(b)
    shared = loss(out1, y1)
    assert shared.shape == (m,)
    torch.testing.assert_close(loss(out1, y1.expand(m, b)), shared)  # per-member targets (M, B)
    torch.testing.assert_close(loss(out1, y1.unsqueeze(-1)), shared)  # (B, 1)
    outd = torch.randn(m, b, 2 * d)
    yd = torch.randn(b, d)
    joint = loss(outd, yd)
    assert joint.shape == (m,)
    torch.testing.assert_close(loss(outd, yd.expand(m, b, d)), joint)
    # each example's loss is summed over D: the sum of the per-dimension losses
    per_dim = sum(loss(outd[..., [k, d + k]], yd[:, k]) for k in range(d))
    torch.testing.assert_close(joint, per_dim)
    with pytest.raises(DataError, match=r"regression targets must have shape \(5, 2\) \(shared\) or \(3, 5, 2\)"):
        loss(outd, torch.randn(b, 3))


def test_mse_hand_value_and_d1_layouts():
    out = torch.tensor([[[1.0], [3.0]]])
    y = torch.tensor([0.0, 1.0])
    assert mse_per_member(out, y).item() == pytest.approx(2.5)  # mean of 1 and 4
    assert mse_per_member(out.squeeze(-1), y).item() == pytest.approx(2.5)


def test_regression_loss_fits_the_engines_slot():
    torch.manual_seed(3)
    out = torch.randn(2, 4, 2)
    y = torch.randn(4)
    batch = Batch(torch.zeros(4, 3), y, torch.arange(4))
    for name, ref in [("nll", gaussian_nll_per_member(out, y)), ("beta_nll", beta_nll_per_member(out, y, beta=0.25)),
                      ("mse", mse_per_member(out[..., :1], y))]:
        fn = regression_loss(name, beta=0.25)
        assert fn.member_wise and fn.__name__ == f"{name}_per_member"
        got = fn(out[..., :1] if name == "mse" else out, batch)
        torch.testing.assert_close(got, ref)
    per_member = Batch(torch.zeros(2, 4, 3), y.expand(2, 4), torch.arange(4).expand(2, 4))
    torch.testing.assert_close(regression_loss("nll")(out, per_member), gaussian_nll_per_member(out, y))


def test_bad_arguments_are_refused_up_front():
    with pytest.raises(ConfigError, match="unknown regression loss 'huber'; valid: nll, beta_nll, mse"):
        regression_loss("huber")
    with pytest.raises(ConfigError, match=r"beta must be a number in \[0, 1\]"):
        regression_loss("beta_nll", beta=2.0)
    with pytest.raises(ConfigError, match="min_var must be a number >= 0"):
        regression_loss("nll", min_var=-1e-3)
    with pytest.raises(DataError, match="a member axis first"):
        gaussian_nll_per_member(torch.zeros(4, 2), torch.zeros(4))
