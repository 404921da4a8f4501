"""Variational hypernetwork (docs/methods.md, varhyper): KL, forms, pruning, complexity control, resume, surface."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.distributions import Normal, kl_divergence

import ensemblekit as ek
from ensemblekit.errors import ConfigError
from ensemblekit.training.checkpoint import RunDir
from ensemblekit.training.config import TrainConfig
from ensemblekit.varhyper import (
    HyperModel, LinearForm, LowRankForm, PiecewiseForm, SeparateForm, kl_to_prior, prune_mask, prune_weights,
    pruning_curve, snr_scores, train_hyper, train_l2, train_separate, weight_names,
)

MLP = {"name": "mlp", "kwargs": {"hidden": [16]}}


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3))


def test_kl_matches_torch_distributions_and_a_hand_value():
    mu = torch.tensor([[0.5, -1.0], [0.0, 2.0]])
    ls = torch.tensor([[-3.0, -1.0], [0.0, 0.5]])
    for sp in (1.0, 0.1):
        ref = kl_divergence(Normal(mu, ls.exp()), Normal(torch.zeros(2, 2), torch.full((2, 2), sp))).sum()
        torch.testing.assert_close(kl_to_prior(mu, ls, sp), ref)
        torch.testing.assert_close(kl_to_prior(mu, ls, sp, dims=1), ref.new_tensor(
            [kl_divergence(Normal(mu[i], ls[i].exp()), Normal(0.0, sp)).sum() for i in range(2)]))
    # mu = 1, sigma = 1, prior N(0, 1): KL = 1/2
    assert kl_to_prior(torch.tensor(1.0), torch.tensor(0.0)).item() == pytest.approx(0.5)


def test_objective_is_mean_of_ce_plus_lambda_kl_over_n():
    hm = HyperModel(_net(), LinearForm(), samples=2)
    x, y = torch.randn(4, 8), torch.tensor([0, 1, 2, 0])
    logits = hm.train()(x)
    assert logits.shape == (2, 4, 3) and hm.last_lambdas.shape == (2,)
    batch = type("B", (), {"y": y})()
    got = hm.objective(num_train=10)(logits, batch)
    ce = torch.stack([nn.functional.cross_entropy(logits[k], y) for k in range(2)])
    want = (ce + hm.last_lambdas * hm.kl(hm.last_lambdas) / 10) / 2
    torch.testing.assert_close(got, want)
    # balanced: each lambda's term divided by 1 + lambda (same draws, same weights)
    hm.weighting = "balanced"
    torch.testing.assert_close(hm.objective(num_train=10)(logits, batch), want / (1 + hm.last_lambdas))
    with pytest.raises(ConfigError, match="weighting"):
        HyperModel(_net(), LinearForm(), weighting="equal")


def test_forms_return_their_constants_at_the_ends_and_shapes():
    targets = {"w.mu": torch.zeros(3, 4), "b.mu": torch.zeros(3)}
    lin = LinearForm()
    leaves = lin.init(targets)
    leaves = {k: torch.randn_like(v) for k, v in leaves.items()}
    out = lin.generate(leaves, torch.tensor([0.0, 1.0, 0.25]))
    assert out["w.mu"].shape == (3, 3, 4) and out["b.mu"].shape == (3, 3)
    torch.testing.assert_close(out["w.mu"][0], leaves["w.mu.c2"])
    torch.testing.assert_close(out["w.mu"][1], leaves["w.mu.c1"])
    torch.testing.assert_close(out["w.mu"][2], 0.25 * leaves["w.mu.c1"] + 0.75 * leaves["w.mu.c2"])

    pw = PiecewiseForm(pivots=6)
    leaves = {k: torch.randn_like(v) for k, v in pw.init(targets).items()}
    out = pw.generate(leaves, torch.tensor([0.0, 1.0, 0.2, 0.3]))
    p = leaves["w.mu.pivots"]
    assert p.shape == (6, 3, 4)
    torch.testing.assert_close(out["w.mu"][0], p[0])
    torch.testing.assert_close(out["w.mu"][1], p[5])
    torch.testing.assert_close(out["w.mu"][2], p[1])
    torch.testing.assert_close(out["w.mu"][3], 0.5 * p[1] + 0.5 * p[2])

    lr = LowRankForm(rank=2, hidden=5)
    leaves = {k: torch.randn_like(v) for k, v in lr.init(targets).items()}
    assert leaves["w.mu.a1"].shape == (3, 2, 5) and leaves["w.mu.a2"].shape == (4, 2, 5) and leaves["b.mu.a2"].shape == (1, 2, 5)
    l = torch.tensor([0.0, 1.0])
    out = lr.generate(leaves, l)
    for k in range(2):
        h = torch.relu(l[k] * leaves["h.weight"] + leaves["h.bias"])
        u = torch.einsum("orh,h->or", leaves["w.mu.a1"], h)
        v = torch.einsum("irh,h->ir", leaves["w.mu.a2"], h)
        torch.testing.assert_close(out["w.mu"][k], leaves["w.mu.c"] + u @ v.T)
    # with h = 0 (all units off) the form is its constant C
    leaves["h.bias"] = torch.full((5,), -10.0)
    leaves["h.weight"] = torch.ones(5)
    torch.testing.assert_close(lr.generate(leaves, l)["w.mu"], leaves["w.mu.c"].expand(2, 3, 4))


def test_hypernetwork_output_shapes_and_unsupported_layers():
    hm = HyperModel(_net(), LowRankForm(), samples=3)
    mu, ls = hm.posterior([0.01, 1.0])
    assert mu["1.weight"].shape == (2, 6, 8) and ls["3.bias"].shape == (2, 3)
    assert torch.all(ls["1.weight"] == -3.0)  # init log-sigma, correction starts at 0
    assert hm.eval()(torch.randn(5, 8)).shape == (6, 5, 3)  # the default grid of 6 lambdas
    with pytest.raises(ConfigError, match=r"unsupported: 1 \(BatchNorm1d\)"):
        HyperModel(nn.Sequential(nn.Linear(8, 4), nn.BatchNorm1d(4)), LinearForm())
    with pytest.raises(ConfigError, match="lambda must be in"):
        hm.members([1000.0])
    with pytest.raises(ConfigError, match="separate nets exist only"):
        SeparateForm([0.0, 1.0]).generate({"w.each": torch.zeros(2, 3)}, torch.tensor([0.5]))


def test_pruning_removes_exactly_the_share_with_the_lowest_scores():
    score = torch.tensor([[5.0, 1.0, 3.0], [0.5, 4.0, 2.0]])
    keep = prune_mask(score, 0.5)
    assert keep.tolist() == [[True, False, True], [False, True, False]]
    mu = {"1.weight": torch.randn(2, 6, 8), "1.bias": torch.randn(2, 6), "3.weight": torch.randn(2, 3, 6), "3.bias": torch.randn(2, 3)}
    ls = {k: torch.randn_like(v) for k, v in mu.items()}
    names = weight_names(_net())
    assert names == ["1.weight", "3.weight"]
    for f in (0.0, 0.1, 0.3, 0.9):
        out = prune_weights(mu, snr_scores(mu, ls), f, names)
        for k in names:
            for m in range(2):
                removed = int((out[k][m] == 0).sum())
                assert removed == round(f * mu[k][m].numel())
                s = snr_scores(mu, ls)[k][m]
                if removed:  # every removed weight scores no higher than every kept one
                    assert s[out[k][m] == 0].max() <= s[out[k][m] != 0].min()
        torch.testing.assert_close(out["1.bias"], mu["1.bias"])  # biases never pruned
    with pytest.raises(ConfigError, match=r"pruning fraction must be in \[0, 1\), got 1.0"):
        prune_mask(score, 1.0)


def _cfg(**kw):
    return TrainConfig(**{"epochs": 25, "batch_size": 48, "optimizer": {"name": "adam", "lr": 0.02}, "progress": False, **kw})


def test_complexity_control_is_monotone_on_a_fixed_seed(blobs):
    factory = ek.models.model_factory(MLP, input_shape=blobs.input_shape, num_classes=blobs.num_classes)
    grid = [0.001, 0.01, 0.1, 1.0, 10.0, 100.0]
    # piecewise form: the posterior's KL falls monotonically with lambda
    hm, _ = train_hyper(factory, blobs, _cfg(epochs=40, optimizer={"name": "adam", "lr": 0.05}), form="piecewise", seed=0)
    kl = hm.kl(grid).detach()
    assert torch.all(kl[1:] < kl[:-1]), kl  # larger lambda -> simpler posterior
    assert kl[0] > 5 * kl[-1]
    assert pruning_curve(hm, [0.01], [0.0], blobs.test)[0, 0] > 0.9


def test_baselines_train_one_net_per_lambda(blobs):
    factory = ek.models.model_factory(MLP, input_shape=blobs.input_shape, num_classes=blobs.num_classes)
    grid = [0.01, 100.0]
    sep, _ = train_separate(factory, blobs, _cfg(epochs=5), grid)
    l2, _ = train_l2(factory, blobs, _cfg(epochs=5), grid)
    kl = sep.kl(grid).detach()
    assert kl[1] < kl[0]
    sq = l2.groups[0].params["head.weight"].pow(2).flatten(1).sum(1)
    assert sq[1] < sq[0]
    assert pruning_curve(sep, grid, [0.0, 0.5], blobs.test).shape == (2, 2)
    assert pruning_curve(l2, grid, [0.0, 0.5], blobs.test).shape == (2, 2)


def test_resume_after_a_kill_gives_the_same_hypernetwork(blobs, tmp_path):
    factory = ek.models.model_factory(MLP, input_shape=blobs.input_shape, num_classes=blobs.num_classes)
    cfg = lambda e: _cfg(epochs=e, schedule="constant")  # noqa: E731  (the first 2 epochs do not depend on the total)
    full, _ = train_hyper(factory, blobs, cfg(4), form="piecewise", seed=3, run=RunDir(tmp_path / "a"))
    train_hyper(factory, blobs, cfg(2), form="piecewise", seed=3, run=RunDir(tmp_path / "b"))
    # the 2-epoch run stands for a run killed after epoch 2; continue it to 4 epochs
    ck = RunDir(tmp_path / "b").load_checkpoint("hyper_piecewise")
    ck["finished"] = False
    RunDir(tmp_path / "b").save_checkpoint("hyper_piecewise", ck)
    # the resumed call builds its template from other initial weights: only the checkpoint makes it equal
    def reseeded():
        torch.manual_seed(99)
        return factory()

    resumed, _ = train_hyper(reseeded, blobs, cfg(4), form="piecewise", seed=3, run=RunDir(tmp_path / "b"))
    for k, v in full.state_tensors().items():
        torch.testing.assert_close(resumed.state_tensors()[k], v, rtol=0, atol=0)
    fresh, _ = train_hyper(reseeded, blobs, cfg(4), form="piecewise", seed=3, run=RunDir(tmp_path / "c"))
    assert any(not torch.equal(v, full.state_tensors()[k]) for k, v in fresh.state_tensors().items())


def test_method_surface_budget_and_errors(blobs):
    vh = ek.create_method("varhyper", model=MLP, lambdas=[0.01, 1.0], prune=0.5, epochs=2, progress=False).fit(blobs)
    assert len(vh.ensemble_) == 2 and vh.ensemble_.members_info[1]["lambda"] == 1.0
    w = vh.ensemble_.groups[0].params["head.weight"]
    assert int((w == 0).sum()) == round(0.5 * w[0].numel()) * 2
    assert vh.train_seconds_ > 0
    kw = ek.create_method("varhyper").at_budget(3, TrainConfig())
    assert kw["samples"] == 3 and [round(math.log10(v), 6) for v in kw["lambdas"]] == [-3.0, -0.5, 2.0]
    with pytest.raises(ConfigError, match="lambdas must lie in"):
        ek.create_method("varhyper", model=MLP, lambdas=[1e3], epochs=1).fit(blobs)
    with pytest.raises(ConfigError, match="unsupported"):
        ek.create_method("varhyper", model={"name": "mlp", "kwargs": {"hidden": [8], "batchnorm": True}}, epochs=1).fit(blobs)


def test_balanced_weighting_lets_the_linear_form_follow_lambda(blobs):
    # With the plain mean the terms near lambda = 100 are 1e5 x those near 1e-3 and both
    # constants of the linear form are pulled the same way: its KL does not fall with
    # lambda (on this seed it even rises). Dividing each term by 1 + lambda restores the
    # complexity control: the KL falls strictly along the grid.
    factory = ek.models.model_factory(MLP, input_shape=blobs.input_shape, num_classes=blobs.num_classes)
    grid = [0.001, 0.01, 0.1, 1.0, 10.0, 100.0]
    kls = {}
    for w in ("none", "balanced"):
        hm, _ = train_hyper(factory, blobs, _cfg(), form="linear", seed=0, weighting=w)
        kls[w] = hm.kl(grid).detach()
    assert kls["none"][-1] >= kls["none"][0]
    assert torch.all(kls["balanced"][1:] < kls["balanced"][:-1]), kls["balanced"]
    assert kls["balanced"][0] > 1.1 * kls["balanced"][-1]


def test_varhyper_experiment_writes_tables_with_kl_and_costs(blobs, tmp_path):
    from ensemblekit.experiments.varhyper import VarHyperConfig, run_varhyper

    cfg = VarHyperConfig(model=MLP, train=_cfg(epochs=2), forms=["linear"], baselines=["separate", "l2"], lambdas=[0.01, 1.0],
                         fractions=[0.0, 0.8], seeds=[0], weighting="balanced")
    out = run_varhyper(cfg, str(tmp_path), data=blobs, plots=False)
    assert set(out["summary"]) == {"hyper_linear", "separate", "l2"} and not out["failed"]
    assert np.array(out["summary"]["hyper_linear"]["acc_mean"]).shape == (2, 2)
    md = (tmp_path / "varhyper.md").read_text()
    assert "KL(q, prior)" in md and "(one run, all lambdas)" in md and "(2 nets)" in md
    # the same command resumes: every unit is finished, nothing is retrained
    again = run_varhyper(cfg, str(tmp_path), data=blobs, plots=False)
    assert again["summary"]["hyper_linear"]["acc_mean"] == out["summary"]["hyper_linear"]["acc_mean"]
    from ensemblekit.experiments.units import StaleResultError

    with pytest.raises(StaleResultError, match="holds work of another config"):  # never relabelled under a new config
        run_varhyper(cfg.model_copy(update={"prior_std": 0.5}), str(tmp_path), data=blobs, plots=False)


def test_separate_nets_train_on_a_lambda_range_below_the_default_evaluation_grid(blobs):
    # log10_range [-4, 0] excludes lambda = 10 of the default evaluation grid; the nets' own lambdas are all that count
    # (a tuning search picked this range and the run failed after its checks had passed)
    method = ek.create_method("variational", model=MLP, epochs=1, batch_size=64, log10_range=(-4.0, 0.0), lambdas=[0.01])
    method.fit(blobs)
    assert method.ensemble_.num_members == 1
