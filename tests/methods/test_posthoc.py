"""The post-hoc methods (laplace, laplace_ensemble, sngp, ddu) as methods: from a finished run, their
cost, what they refuse, and what they change about a network's uncertainty on a fixed seed."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

import ensemblekit as ek
from ensemblekit.errors import ConfigError
from ensemblekit.methods import METHODS

MLP = {"name": "mlp", "kwargs": {"hidden": [32]}}
TRAIN = {"epochs": 8, "batch_size": 32, "optimizer": {"name": "adam", "lr": 0.01}, "progress": False}


def _run(tmp_path, data, members=2):
    from ensemblekit.experiments.results import record_result

    ind = ek.create_method("independent", model=MLP, members=members, **TRAIN).fit(data)
    record_result(ind, data, str(tmp_path / "run"), plots=False, report=False)
    return ind, tmp_path / "run"


def test_laplace_ensemble_from_a_run_fits_its_networks_without_training_and_counts_their_cost(blobs, tmp_path):
    ind, run = _run(tmp_path, blobs)
    row = json.loads((run / "results.json").read_text())
    lap = ek.create_method("laplace_ensemble", model=MLP, from_run=str(run), **TRAIN).fit(blobs)
    assert "train" not in lap.cost_ and lap.flops_["from_run"] == row["cost"]["train_flops"] > 0
    assert lap.flops_["laplace_fit"] > 0 and lap.train_flops_ == pytest.approx(row["cost"]["train_flops"] + lap.flops_["laplace_fit"])
    assert not any(h["stage"] == "train" for h in lap.history_)
    x = blobs.test.x
    with torch.no_grad():
        plain, post = ind.ensemble_.logits(x), lap.ensemble_.logits(x)
    assert post.shape == plain.shape  # probit: one member per network
    assert torch.equal(post.argmax(-1), plain.argmax(-1))  # f / sqrt(1 + pi v / 8) keeps each member's class...
    assert bool((post.abs() <= plain.abs() + 1e-5).all()) and not torch.allclose(post, plain)  # ...and shrinks its logits


def test_from_run_refuses_before_anything_is_written(blobs, tmp_path):
    _, run = _run(tmp_path, blobs)
    with pytest.raises(ConfigError, match="is not a finished run"):
        ek.create_method("laplace", model=MLP, from_run=str(tmp_path / "nothing"), **TRAIN).fit(blobs)
    other = ek.from_arrays(blobs.train.x.numpy() + 1, blobs.train.y.numpy(), blobs.test.x.numpy(), blobs.test.y.numpy(),
                           val_fraction=0.2, seed=0, name="blobs")
    with pytest.raises(ConfigError, match="trained on other data"):
        ek.create_method("laplace", model=MLP, from_run=str(run), **TRAIN).fit(other, run_dir=str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match="from_run is for post-hoc fits"):
        ek.create_method("ddu", model=MLP, from_run=str(run), **TRAIN).fit(blobs)


def test_laplace_makes_one_network_less_sure_far_from_the_data(blobs):
    """Kristiadi et al.'s effect on a fixed seed: a ReLU network is confident far from its data, and its
    last-layer Laplace approximation is not; on the test split the predictions stay the same."""
    lap = ek.create_method("laplace", model=MLP, structure="full", **TRAIN).fit(blobs)
    net = lap.ensemble_.ensemble
    far = 50 * blobs.test.x
    p_net, p_lap = net.predict_proba(far).mean(0).max(-1).values, lap.ensemble_.predict_proba(far).mean(0).max(-1).values
    assert p_net.mean() > 0.95 and p_lap.mean() < p_net.mean() - 0.05
    assert torch.equal(net.predict_proba(blobs.test).argmax(-1), lap.ensemble_.predict_proba(blobs.test).argmax(-1))


def test_ddu_density_is_an_ood_score_and_only_ddu_rows_have_it(blobs):
    from ensemblekit.evaluation.run import evaluate_uncertainty

    ddu = ek.create_method("ddu", model=MLP, **TRAIN).fit(blobs)
    res = evaluate_uncertainty(ddu.ensemble_, blobs, {"ood": ["noise"], "scores": ["msp", "mi", "density"]})
    scores = res["ood"]["noise"]["scores"]
    assert set(scores) == {"msp", "mi", "density"} and scores["density"]["auroc"] > 0.95  # uniform noise is far from the blobs
    assert ddu.flops_["gda_fit"] > 0 and "gda_fit" in ddu.cost_


def test_the_rivals_budgets_and_tasks():
    from ensemblekit.training.config import TrainConfig

    train = TrainConfig(epochs=10)
    assert METHODS.get("laplace").at_budget(3, train) == {"epochs": 30}
    assert METHODS.get("laplace_ensemble").at_budget(3, train) == {"members": 3}
    assert METHODS.get("sngp").at_budget(2, train) == {"epochs": 20}
    assert METHODS.get("sngp_ensemble").at_budget(2, train) == {"members": 2}
    assert "regression" in METHODS.get("laplace").tasks and "regression" not in METHODS.get("sngp").tasks


def test_evaluate_laplace_on_a_saved_run(tmp_path, cli, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({"data": "digits", "model": MLP, "method": {"name": "independent", "members": 2},
                                   "train": {**TRAIN, "epochs": 3}, "out": str(tmp_path / "runs")}))
    assert cli("train", cfg, "--run-dir", tmp_path / "run") == 0
    capsys.readouterr()
    assert cli("evaluate", tmp_path / "run", "--laplace", "cubic") == 2
    assert "--laplace must be full | kfac | diag" in capsys.readouterr().err and not (tmp_path / "run" / "evaluation").exists()
    assert cli("evaluate", tmp_path / "run", "--laplace", "kfac", "--ood", "noise") == 0
    out = capsys.readouterr().out
    assert "Laplace (kfac, prior marglik, probit) fitted to 2 network(s)" in out
    from ensemblekit.predictors import load_predictor

    lap = load_predictor(str(tmp_path / "run" / "evaluation" / "laplace.safetensors"))
    assert type(lap).__name__ == "Laplace" and lap.num_members == 2
    ev = json.loads((tmp_path / "run" / "evaluation" / "evaluation.json").read_text())
    assert "msp" in ev["ood"]["noise"]["scores"]


def test_a_cell_that_reads_a_run_is_keyed_by_the_run_s_contents_not_its_path(blobs, tmp_path):
    from ensemblekit.config import CompareConfig
    from ensemblekit.experiments.compare import cell_specs, train_hash

    _, run = _run(tmp_path, blobs)
    cfg = {"data": "digits", "model": MLP, "train": TRAIN, "budgets": [1], "seeds": [0],
           "methods": [{"name": "laplace_ensemble", "label": "L", "from_run": str(run)}, {"name": "independent", "label": "Ind"}]}
    lap, ind = cell_specs(CompareConfig(**cfg))
    before, before_ind = train_hash(lap, blobs), train_hash(ind, blobs)
    assert train_hash(lap, blobs) == before  # deterministic
    again = ek.create_method("independent", model=MLP, members=2, seed=5, **TRAIN).fit(blobs)
    again.ensemble_.save(str(run / "ensemble.safetensors"))  # the same path, other networks
    assert train_hash(lap, blobs) != before and train_hash(ind, blobs) == before_ind
