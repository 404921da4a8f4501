"""Tiny end-to-end runs of the DARTS search, the hypernetwork and the EdgeNES experiment."""

from __future__ import annotations

import json
import os

import pytest
import torch

import ensemblekit as ek
from ensemblekit.errors import ConfigError
from ensemblekit.experiments.nes import NesConfig, run_nes
from ensemblekit.nas.genotype import Genotype, common_edges
from ensemblekit.nas.pool import curve_auc, spearman
from ensemblekit.nas.search import HyperConfig, SearchConfig, darts_search, linear_anneal, train_hypernet

TINY = SearchConfig(channels=2, layers=2, nodes=2, steps=3, batch_size=16)  # 5 edges per cell


def test_linear_anneal_and_spearman():
    assert linear_anneal(1.0, 0.05, 0, 11) == 1.0 and linear_anneal(1.0, 0.05, 10, 11) == pytest.approx(0.05)
    assert linear_anneal(0.3, 3.0, 5, 11) == pytest.approx(1.65)
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3], [1, 1, 2]) == pytest.approx(0.8660254)


def test_search_and_hypernet_resume_from_their_files(blobs, tmp_path):
    star, net = darts_search(blobs, TINY, seed=0, run_dir=str(tmp_path))
    assert star.alpha.shape == (2, 5, 7) and star.beta.shape == (2, 5) and star.genotype.num_kept == 8
    assert len(star.history) == 3 and star.seconds > 0
    assert star.flops > 0
    res = train_hypernet(net, blobs, star, TINY, HyperConfig(steps=3), seed=0, run_dir=str(tmp_path))
    hist, hyper = res.history, res.hyper
    assert [round(h["temperature"], 3) for h in hist] == [1.0, 0.525, 0.05] and [round(h["c"], 3) for h in hist] == [0.3, 1.65, 3.0]
    assert hyper.lam_max == 8.0 and hyper.num_pivots == 5 and res.flops > 0
    again, _ = darts_search(blobs, TINY, seed=0, run_dir=str(tmp_path))
    assert again.genotype == star.genotype and again.seconds == star.seconds and again.flops == star.flops
    res2 = train_hypernet(net, blobs, again, TINY, HyperConfig(steps=3), seed=0, run_dir=str(tmp_path))
    torch.testing.assert_close(res2.hyper.alphas, hyper.alphas)
    assert res2.seconds == res.seconds


def test_nes_experiment_end_to_end(blobs, tmp_path):
    cfg = NesConfig(search=TINY.model_dump(), hyper={"steps": 3}, channels=2, layers=2, pool=2, ensemble=2,
                    train={"epochs": 1, "batch_size": 32, "progress": False, "device": "cpu"},
                    methods=["edgenes", "darts", "deepens_darts", "nes_rs"])
    out = run_nes(cfg, str(tmp_path), data=blobs)
    run = out["runs"][0]
    res = run["results"]
    assert set(res) == {"edgenes", "darts", "deepens_darts", "nes_rs"}
    # one DARTS search serves darts, deepens_darts and edgenes; alpha* with init copy 0 is trained once
    assert len(list((tmp_path / "cache").glob("search-*"))) == 1
    assert res["darts"]["chosen"][0] in res["deepens_darts"]["chosen"]
    keys = {k for r in res.values() for k in r["chosen"]}  # pools of 2 with n = 2: every candidate is chosen
    assert len(keys) <= 2 + 1 + 1 + 2 and len(list((tmp_path / "cache" / "candidates").iterdir())) == len(keys)
    assert len(res["edgenes"]["chosen"]) == 2 and len(res["darts"]["chosen"]) == 1 and len(res["deepens_darts"]["chosen"]) == 2
    assert len(set(res["deepens_darts"]["chosen"])) == 2  # n seeds of alpha*
    assert res["edgenes"]["find_s"] > res["darts"]["find_s"] > 0 and res["nes_rs"]["find_s"] == 0
    assert all(0 <= r["test_acc"] <= 1 and r["retrain_s"] > 0 for r in res.values())
    star = Genotype.from_json(run["alpha_star"])
    assert [p["lambda"] for p in run["pool"]] == [0.0, 8.0] and all(0 <= p["common"] <= 8 for p in run["pool"])
    assert common_edges(star, star) == 8 and len(run["grid"]) == 4 * 9
    assert os.path.exists(tmp_path / "nes.md") and os.path.exists(tmp_path / "nes_accuracy_cost.png")
    assert os.path.exists(tmp_path / "nes_common_edges.png")
    saved = json.loads((tmp_path / "nes.json").read_text())
    assert saved["summary"]["edgenes"]["seeds"] == 1
    with pytest.raises(ValueError, match="ensemble \\(4\\) must be <= pool \\(2\\)"):
        NesConfig(pool=2, ensemble=4)
    with pytest.raises(ValueError, match="unknown methods \\['bogus'\\]"):
        NesConfig(methods=["bogus"])
    # the same command again reuses every finished method; a changed config is refused before anything runs
    again = run_nes(cfg, str(tmp_path), data=blobs)
    assert again["summary"] == out["summary"]
    from ensemblekit.experiments.units import StaleResultError

    with pytest.raises(StaleResultError, match="holds work of another config"):
        run_nes(cfg.model_copy(update={"channels": 4}), str(tmp_path), data=blobs)


def test_edgenes_method_attributes(blobs):
    m = ek.create_method("edgenes", search=TINY.model_dump(), hyper={"steps": 2}, channels=2, pool=2, members=2, epochs=1,
                         batch_size=32, progress=False).fit(blobs)
    assert len(m.ensemble_) == 2 and sorted(m.chosen_) == [0, 1]
    assert [p["lambda"] for p in m.pool_] == [0.0, 8.0]
    assert set(m.cost_) >= {"search", "hypernet", "cand0", "cand1", "selection"}
    with pytest.raises(ConfigError, match="members \\(3\\) must be <= pool \\(2\\)"):
        ek.create_method("edgenes", search=TINY.model_dump(), pool=2, members=3, epochs=1).fit(blobs)
    with pytest.raises(ConfigError, match="edgenes"):
        ek.create_method("edgenes", search={"bogus": 1}, epochs=1).fit(blobs)


def test_curve_auc_by_hand():
    # 0 until t=2, 0.5 until t=6, 0.8 until the horizon 10: (4 * 0.5 + 4 * 0.8) / 10
    assert curve_auc([[2.0, 0.5], [6.0, 0.8]], 10.0) == pytest.approx(0.52)
    assert curve_auc([[0.0, 1.0]], 5.0) == pytest.approx(1.0)


def test_the_same_seeds_give_the_same_numbers_through_nes_and_compare(blobs, tmp_path):
    from ensemblekit.config import CompareConfig
    from ensemblekit.experiments.compare import run_compare

    train = {"epochs": 1, "batch_size": 32, "progress": False, "device": "cpu"}
    shared = {"search": TINY.model_dump(), "channels": 2, "layers": 2}
    nes = run_nes(NesConfig(**shared, hyper={"steps": 3}, pool=3, ensemble=2, train=train, seeds=[1], methods=["edgenes", "nes_rs"]),
                  str(tmp_path / "nes"), data=blobs)
    cfg = CompareConfig(data="digits", model={"name": "mlp", "kwargs": {"hidden": [4]}}, train=train, budgets=[3], seeds=[1], methods=[
        {"name": "edgenes", **shared, "hyper": {"steps": 3}, "members": 2},  # 3B: a pool of 3, n = 2
        {"name": "nes_rs", **shared, "members": 2},
    ])
    rows = run_compare(cfg, str(tmp_path / "cmp"), data=blobs).rows
    assert len(rows) == 2 and not any("failed" in r or "skipped" in r for r in rows)
    for row in rows:
        ref = nes["runs"][0]["results"][row["name"]]
        assert row["test"]["accuracy"] == ref["test_acc"] and row["test"]["nll"] == ref["test_nll"]
        assert row["details"]["chosen"] == ref["chosen"]
