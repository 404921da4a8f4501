"""The last-layer Laplace approximation against hand computations: the GGN of a logistic problem is its
exact Hessian, the probit predictive by hand, KFAC and diag as the full matrix's special cases, the
evidence against torch.logdet, MC draws against the Gaussian they sample, regression's σ² + v, and the
predictor's file and export."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ensemblekit import Ensemble
from ensemblekit.data import from_arrays
from ensemblekit.errors import ConfigError
from ensemblekit.laplace.curvature import Curvature, with_bias
from ensemblekit.laplace.posterior import LastLayerPosterior
from ensemblekit.laplace.predictor import Laplace, fit_laplace


def _logistic(n=40, d=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    phi = torch.randn(n, d, generator=g, dtype=torch.float64)
    theta = torch.randn(2, d + 1, generator=g, dtype=torch.float64)  # 2 classes: W (2, d) and b (2,)
    y = (phi[:, 0] + 0.3 * torch.randn(n, generator=g, dtype=torch.float64) > 0).long()
    return phi, theta, y


def _posterior(structure, phi, theta):
    phi_t = with_bias(phi, True)
    probs = torch.softmax(phi_t @ theta.T, -1)
    curv = Curvature(structure, "classification", 2, phi_t.shape[1])
    curv.add_classification(phi_t[:17], probs[:17])  # two batches: the sums accumulate
    curv.add_classification(phi_t[17:], probs[17:])
    return LastLayerPosterior(theta, curv.factors(), structure=structure, task="classification", num_data=len(phi), bias=True)


def test_the_full_ggn_of_a_logistic_problem_is_its_exact_hessian_and_the_probit_predictive_is_by_hand():
    phi, theta, y = _logistic()
    phi_t = with_bias(phi, True)

    def nll(flat):
        return nn.functional.cross_entropy(phi_t @ flat.reshape(2, 3).T, y, reduction="sum")

    hess = torch.autograd.functional.hessian(nll, theta.reshape(-1))  # (6, 6), row-major θ[k, j]
    post = _posterior("full", phi, theta)
    torch.testing.assert_close(post.curvature_matrix(), hess, rtol=1e-10, atol=1e-10)
    delta = 0.7
    sigma = torch.linalg.inv(hess + delta * torch.eye(6, dtype=torch.float64))
    torch.testing.assert_close(post.covariance(delta), sigma, rtol=1e-8, atol=1e-10)
    # the probit predictive at a test point, by hand: v_c = J_c Σ J_cᵀ with J_c = e_c ⊗ φ̃
    x = torch.tensor([[0.4, -1.3]], dtype=torch.float64)
    xt = with_bias(x, True)[0]
    v = torch.stack([torch.kron(torch.eye(2, dtype=torch.float64)[c], xt) @ sigma @ torch.kron(torch.eye(2, dtype=torch.float64)[c], xt)
                     for c in range(2)])
    post.prior_precision = delta
    torch.testing.assert_close(post.function_variance(x)[0], v, rtol=1e-8, atol=1e-12)
    f = theta @ xt
    by_hand = torch.softmax(f / torch.sqrt(1 + math.pi / 8 * v), -1)
    head = nn.Linear(2, 2).double()
    with torch.no_grad():
        head.weight.copy_(theta[:, :2])
        head.bias.copy_(theta[:, 2])
    ens = Ensemble.from_modules([nn.Sequential(nn.Identity(), head).float()])
    lap = Laplace(ens, [post])
    torch.testing.assert_close(lap.predict_proba(x.float())[0, 0].double(), by_hand, rtol=1e-4, atol=1e-5)


def test_kfac_and_diag_are_the_full_matrix_s_special_cases():
    phi, theta, _ = _logistic(n=1)  # one example: (diag p − ppᵀ) ⊗ φ̃φ̃ᵀ is a Kronecker product, KFAC is exact
    torch.testing.assert_close(_posterior("kfac", phi, theta).curvature_matrix(), _posterior("full", phi, theta).curvature_matrix())
    phi, theta, _ = _logistic(n=40)
    full = _posterior("full", phi, theta).curvature_matrix()
    torch.testing.assert_close(_posterior("diag", phi, theta).curvature_matrix(), torch.diag(torch.diagonal(full)))
    for structure in ("kfac", "diag"):  # each structure's covariance is the inverse of its own H + δI
        post = _posterior(structure, phi, theta)
        h = post.curvature_matrix()
        torch.testing.assert_close(post.covariance(2.0), torch.linalg.inv(h + 2.0 * torch.eye(6, dtype=torch.float64)), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("structure", ["full", "kfac", "diag"])
def test_the_evidence_against_logdet_and_the_prior_that_maximises_it(structure):
    phi, theta, _ = _logistic()
    post = _posterior(structure, phi, theta)
    h, p = post.curvature_matrix(), 6
    for delta in (1e-2, 0.5, 30.0):
        direct = -0.5 * delta * float(theta.square().sum()) + 0.5 * p * math.log(delta) - 0.5 * float(
            torch.logdet(h + delta * torch.eye(p, dtype=torch.float64)))
        assert post.log_marglik(delta) == pytest.approx(direct, rel=1e-9, abs=1e-9)
    best = post.fit_prior("marglik")
    fine = torch.logspace(-4, 4, 4001, dtype=torch.float64).tolist()  # brute force on a fine grid
    brute = max(fine, key=post.log_marglik)
    assert post.log_marglik(best) >= post.log_marglik(brute) - 1e-6
    assert math.log(best) == pytest.approx(math.log(brute), abs=0.02)


def test_mc_draws_have_the_posterior_s_mean_and_variance():
    phi, theta, _ = _logistic()
    post = _posterior("full", phi, theta)
    post.prior_precision = 1.0
    draws = post.sample(20000, torch.Generator().manual_seed(0))  # (S, 2, 3)
    torch.testing.assert_close(draws.mean(0), theta, atol=0.03, rtol=0)
    flat = draws.reshape(20000, -1)
    torch.testing.assert_close(torch.cov(flat.T), post.covariance(), atol=0.02, rtol=0.05)


def test_a_regression_head_s_predictive_variance_is_sigma2_plus_v_by_hand():
    torch.manual_seed(0)
    n, d = 30, 3
    x = torch.randn(n, d)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.1 * torch.randn(n)
    data = from_arrays(x.numpy(), y.numpy(), x[:5].numpy(), y[:5].numpy(), val_fraction=0.0, seed=0, name="lin", task="regression")
    head = nn.Linear(d, 2)  # a mean and a raw variance
    ens = Ensemble.from_modules([nn.Sequential(nn.Identity(), head)])
    from ensemblekit.metrics.head_outputs import Readout

    ens.readout = Readout.for_data(data)
    lap = fit_laplace(ens, data.train, structure="full", prior=2.0)
    with torch.no_grad():
        z = head(data.train.x.float())
    sigma2 = (nn.functional.softplus(z[:, 1].double()) + ens.readout.min_var)
    phi_t = with_bias(data.train.x.double(), True)
    h = (phi_t.T * (1 / sigma2)) @ phi_t  # Σ_n φ̃φ̃ᵀ / σ²_n
    cov = torch.linalg.inv(h + 2.0 * torch.eye(d + 1, dtype=torch.float64))
    q = torch.tensor([[0.5, 0.5, -1.0]])
    qt = with_bias(q.double(), True)[0]
    with torch.no_grad():
        zq = head(q)
    want = float(nn.functional.softplus(zq[0, 1].double()) + ens.readout.min_var + qt @ cov @ qt)
    from ensemblekit.evaluation.forward import predictive

    got = predictive(lap, q).var.reshape(-1)[0].item()
    assert got == pytest.approx(want, rel=1e-4)


def test_the_file_the_export_and_the_refusals(blobs, tmp_path):
    import ensemblekit as ek
    from ensemblekit.predictors import load_predictor

    ind = ek.create_method("independent", model={"name": "mlp", "kwargs": {"hidden": [16]}}, members=2, epochs=3, progress=False).fit(blobs)
    lap = fit_laplace(ind.ensemble_, blobs.train, structure="kfac")
    path = str(tmp_path / "lap.safetensors")
    lap.save(path)
    back = load_predictor(path)
    x = blobs.test.x
    torch.testing.assert_close(back.logits(x), lap.logits(x))
    module = lap.export_module()
    torch.testing.assert_close(module(x), lap.predict_proba(x).mean(0), rtol=1e-5, atol=1e-6)
    mc = fit_laplace(ind.ensemble_, blobs.train, structure="diag", predictive="mc", samples=4)
    assert mc.num_members == 8 and mc.logits(x).shape == (8, len(x), 3)
    torch.testing.assert_close(mc.logits(x), mc.logits(x))  # seeded draws: the same members every call
    with pytest.raises(ConfigError, match="cannot be exported|export"):
        mc.export_module()
    with pytest.raises(ConfigError, match="structure"):
        fit_laplace(ind.ensemble_, blobs.train, structure="cubic")
    with pytest.raises(ConfigError, match="validation"):
        fit_laplace(ind.ensemble_, blobs.train, prior="val")


@pytest.mark.parametrize("structure", ["kfac", "full", "diag"])
def test_the_validation_prior_is_the_grid_point_whose_predictor_has_the_lowest_validation_nll(blobs, structure):
    """The search projects the features once (kfac, diag) or per prior (full); either way each grid
    point's NLL is the one the fitted predictor itself gets on the validation split."""
    import ensemblekit as ek
    from ensemblekit.metrics.classification import nll

    ind = ek.create_method("independent", model={"name": "mlp", "kwargs": {"hidden": [16]}}, members=2, epochs=3, progress=False).fit(blobs)
    grid = (1e-2, 1e-1, 1.0, 10.0, 100.0)
    chosen = fit_laplace(ind.ensemble_, blobs.train, structure=structure, prior="val", val=blobs.val, grid=grid)
    by_hand = []
    for delta in grid:
        lap = fit_laplace(ind.ensemble_, blobs.train, structure=structure, prior=delta)
        by_hand.append(float(nll(lap.predict_proba(blobs.val.x).mean(0), blobs.val.y)))
    assert len(set(round(v, 6) for v in by_hand)) > 1  # the prior matters on this problem
    best = grid[min(range(len(grid)), key=by_hand.__getitem__)]
    assert [p.prior_precision for p in chosen.posteriors] == [best, best]
