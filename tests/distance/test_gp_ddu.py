"""SNGP's random features against the RBF kernel they approximate, and DDU's density against distance."""

from __future__ import annotations

import math

import torch

from ensemblekit.distance.ddu import fit_gda
from ensemblekit.distance.gp import RandomFourierFeatures


def test_random_features_reproduce_the_rbf_kernel_in_expectation():
    torch.manual_seed(0)
    lengthscale = 1.5
    x = torch.randn(6, 4)
    rff = RandomFourierFeatures(4, features=20000, lengthscale=lengthscale)
    with torch.no_grad():
        phi = rff(x)
    approx = phi @ phi.T
    exact = torch.exp(-torch.cdist(x, x).square() / (2 * lengthscale ** 2))
    torch.testing.assert_close(approx, exact, atol=0.03, rtol=0)  # Monte Carlo error ~ 1/sqrt(D)
    assert torch.allclose(torch.diagonal(approx), torch.ones(6), atol=0.03)


def test_the_density_ranks_far_points_below_near_ones_and_matches_the_mixture_by_hand():
    torch.manual_seed(0)
    centers = torch.tensor([[0.0, 0.0], [4.0, 0.0]])
    y = torch.arange(400) % 2
    z = centers[y] + 0.5 * torch.randn(400, 2)
    gda = fit_gda(z, y, 2)
    near, far = centers + 0.1, centers + torch.tensor([[0.0, 6.0], [0.0, -6.0]])
    assert bool((gda.log_density(near) > gda.log_density(far) + 10).all())
    q = torch.tensor([[1.0, 0.5]])
    parts = []
    for c in range(2):
        zc = z[y == c].double()
        mvn = torch.distributions.MultivariateNormal(zc.mean(0), torch.cov(zc.T))
        parts.append(math.log(0.5) + mvn.log_prob(q.double()))
    want = torch.logsumexp(torch.stack(parts), 0)
    torch.testing.assert_close(gda.log_density(q).double(), want, rtol=1e-4, atol=1e-4)
