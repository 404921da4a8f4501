"""The distillation losses and the Dirichlet reading, against hand computations and torch.distributions."""

from __future__ import annotations

import math

import pytest
import torch

from ensemblekit.distill import dirichlet_nll, dirichlet_uncertainty, gaussian_kl, kd_loss, soften
from ensemblekit.errors import ConfigError


def test_kd_loss_at_a_temperature_is_t_squared_times_the_kl_of_the_softened_distributions():
    z = torch.tensor([[[1.0, 0.0, -1.0]]], dtype=torch.float64)
    p = torch.tensor([[0.7, 0.2, 0.1]], dtype=torch.float64)
    t = 2.0
    q = [math.sqrt(v) for v in (0.7, 0.2, 0.1)]
    q = [v / sum(q) for v in q]
    zs = [1.0 / t, 0.0, -1.0 / t]
    log_norm = math.log(sum(math.exp(v) for v in zs))
    kl = sum(qi * (math.log(qi) - (zi - log_norm)) for qi, zi in zip(q, zs))
    assert kd_loss(z, p, t).item() == pytest.approx(t * t * kl, rel=1e-6)
    assert kd_loss(z, p, t).shape == (1,)
    # at T = 1 it is the cross-entropy to the teacher minus the teacher's entropy
    ce = -(p * torch.log_softmax(z[0], -1)).sum(-1).mean()
    h = -(p * p.log()).sum(-1).mean()
    assert kd_loss(z, p, 1.0).item() == pytest.approx((ce - h).item(), rel=1e-6)


def test_kd_gradient_is_t_times_the_softmax_difference_and_its_scale_does_not_fall_with_t():
    """d/dz of T² KL = T (softmax(z/T) - q); Hinton et al.'s high-temperature limit: (z - v) / C per
    example for zero-mean logits z and v = log p (mean removed), whatever T."""
    torch.manual_seed(0)
    z0 = torch.randn(1, 4, 5, dtype=torch.float64)
    z0 = z0 - z0.mean(-1, keepdim=True)
    p = torch.softmax(torch.randn(4, 5, dtype=torch.float64), -1)
    v = p.log() - p.log().mean(-1, keepdim=True)
    grads = {}
    for t in (3.0, 100.0, 1000.0):
        z = z0.clone().requires_grad_(True)
        kd_loss(z, p, t).sum().backward()
        hand = t * (torch.softmax(z0 / t, -1) - soften(p, t)) / 4
        torch.testing.assert_close(z.grad, hand, rtol=1e-9, atol=1e-12)
        grads[t] = z.grad
    limit = (z0 - v) / (5 * 4)
    torch.testing.assert_close(grads[1000.0], limit, rtol=0, atol=3e-4)  # O(1/T) from the limit
    torch.testing.assert_close(grads[100.0], grads[1000.0], rtol=0, atol=2e-3)  # the same scale at T = 100 and 1000
    with pytest.raises(ConfigError, match="temperature"):
        kd_loss(z0, p, 0.0)


def test_hydra_heads_learn_their_own_member():
    z = torch.zeros(2, 1, 2)
    member = torch.tensor([[[0.9, 0.1]], [[0.1, 0.9]]])
    per_head = kd_loss(z, member, 1.0)
    kl = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)
    assert per_head.tolist() == pytest.approx([kl, kl], rel=1e-6)


def test_dirichlet_nll_matches_a_hand_value_and_torch_distributions():
    alpha = [2.0, 3.0, 5.0]
    pi = [0.2, 0.3, 0.5]
    log_dir = (math.lgamma(sum(alpha)) - sum(math.lgamma(a) for a in alpha) + sum((a - 1) * math.log(p) for a, p in zip(alpha, pi)))
    z = torch.tensor([[[math.log(a) for a in alpha]]])
    nll = dirichlet_nll(z, torch.tensor([[pi]]), smoothing=0.0)
    assert nll.item() == pytest.approx(-log_dir, rel=1e-5)
    # two members, two examples: the mean over both of -log Dir, as torch.distributions computes it
    torch.manual_seed(1)
    z = torch.randn(1, 2, 4)
    members = torch.softmax(torch.randn(3, 2, 4), -1)
    eps = 1e-3
    smoothed = (1 - eps) * members + eps / 4
    ref = -torch.distributions.Dirichlet(torch.exp(z[0])).log_prob(smoothed).mean()
    assert dirichlet_nll(z, members, smoothing=eps).item() == pytest.approx(ref.item(), rel=1e-5)


def test_gaussian_kl_is_torch_distributions_kl():
    torch.manual_seed(2)
    mean, var = torch.randn(2, 5), torch.rand(2, 5) + 0.1
    tm, tv = torch.randn(5), torch.rand(5) + 0.1
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(tm, tv.sqrt()), torch.distributions.Normal(mean, var.sqrt())).mean(-1)
    torch.testing.assert_close(gaussian_kl(mean, var, tm, tv), ref)
    assert gaussian_kl(tm[None], tv[None], tm, tv).item() == pytest.approx(0.0, abs=1e-7)


def test_dirichlet_uncertainty_in_closed_form_and_by_sampling():
    u = dirichlet_uncertainty(torch.zeros(2))  # Dir(1, 1): E[H] = 2 ∫ -p log p dp = 1/2 nat
    assert u["aleatoric"].item() == pytest.approx(0.5, abs=1e-12)
    assert u["total"].item() == pytest.approx(math.log(2), abs=1e-12)
    alpha = torch.tensor([2.0, 3.0, 5.0], dtype=torch.float64)
    u = dirichlet_uncertainty(alpha.log())
    torch.manual_seed(3)
    draws = torch.distributions.Dirichlet(alpha).sample(torch.Size([200_000]))
    h = -(draws * draws.log()).sum(-1).mean()
    assert u["aleatoric"].item() == pytest.approx(h.item(), abs=3e-3)
    # a sharper Dirichlet of the same mean: the same total, less mutual information
    sharp = dirichlet_uncertainty((alpha * 100).log())
    assert sharp["total"].item() == pytest.approx(u["total"].item(), rel=1e-9)
    assert sharp["mi"].item() < u["mi"].item() / 50


def test_the_split_end2_loss_trains_the_mean_by_kd_and_the_precision_alone_by_the_nll():
    from ensemblekit.distill import end2_loss, precision_only

    torch.manual_seed(4)
    z = torch.randn(1, 3, 5, dtype=torch.float64, requires_grad=True)
    members = torch.softmax(torch.randn(4, 3, 5, dtype=torch.float64), -1)
    spread = dirichlet_nll(precision_only(z), members, smoothing=1e-4)
    assert spread.item() == pytest.approx(dirichlet_nll(z, members, smoothing=1e-4).item(), rel=1e-12)  # the same value
    (grad,) = torch.autograd.grad(spread.sum(), z)
    torch.testing.assert_close(grad, grad[..., :1].expand_as(grad))  # every logit moved alike: the mean untouched
    total = end2_loss(z, members, 2.0, 1e-4, "split", 0.5)
    assert total.item() == pytest.approx((kd_loss(z, members.mean(0), 2.0) + 0.5 * spread / 5).item(), rel=1e-12)
    assert end2_loss(z, members, 1.0, 1e-4, "joint").item() == pytest.approx(dirichlet_nll(z, members).item(), rel=1e-12)
