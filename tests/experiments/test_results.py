"""The one results path: row schema, measured cost (FLOPs by hand), test-time augmentation in the reported numbers."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import ensemblekit as ek
from ensemblekit.config import RunConfig
from ensemblekit.experiments.results import ROW_FORMAT, record_result
from ensemblekit.experiments.run import run_training
from ensemblekit.metrics import evaluate_probs
from ensemblekit.training.flops import count_flops

LINEAR = {"name": "mlp", "kwargs": {"hidden": []}}  # Flatten -> Linear(8, 3)


def test_row_schema_and_cost_against_hand_counted_flops(blobs, tmp_path):
    # 240 training examples, 3 members, 2 epochs. A Linear(8, 3) costs 2*8*3 = 48 FLOPs forward
    # per example; backward computes the weight gradient only (the input needs none): 48 more.
    m = ek.create_method("independent", model=LINEAR, members=3, epochs=2, batch_size=32, progress=False).fit(blobs)
    row = record_result(m, blobs, str(tmp_path))
    assert row["format"] == ROW_FORMAT and row["name"] == "independent" and row["members"] == 3 and row["budget"] is None
    assert row["cost"]["train_flops"] == 96 * 3 * 240 * 2 == m.train_flops_
    assert row["cost"]["flops_by_stage"] == {"train": 96 * 3 * 240 * 2}
    assert row["cost"]["inference_flops"] == 48 * 3
    assert row["cost"]["parameters"] == 3 * (8 * 3 + 3)
    assert row["wall_s"] > 0 and set(row["cost"]["stages_s"]) == {"train"}
    assert set(row["test"]) >= {"accuracy", "error", "nll", "brier", "ece", "members", "member_mean", "diversity", "size_curve"}
    assert row["hyperparameters"] == {"members": 3, "budget_by": "members"} and row["test"]["tta"] == []
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["test"]["nll"] == row["test"]["nll"] and (tmp_path / "ensemble.safetensors").exists()


def test_grouped_convolutions_cost_what_separate_ones_do():
    # torch's formula counts a grouped convolution's weight gradient `groups` times over; ours does not
    net = nn.Conv1d(4, 6, 3)
    grouped = nn.Conv1d(12, 18, 3, groups=3)
    x, xg = torch.randn(5, 4, 20), torch.randn(5, 12, 20)
    _, one = count_flops(lambda: net(x).sum().backward())
    _, three = count_flops(lambda: grouped(xg).sum().backward())
    assert three == 3 * one and one == 2 * (2 * 5 * 6 * 4 * 3 * 18)  # forward + weight gradient (no input gradient)


def test_test_time_augmentation_is_in_the_reported_test_and_val_metrics(tmp_path):
    data = ek.load_dataset("digits")
    cfg = RunConfig(data="digits", model={"name": "cnn2d", "kwargs": {"channels": [4]}}, method={"name": "independent", "members": 2},
                    train={"epochs": 1, "batch_size": 64, "optimizer": {"name": "adam", "lr": 0.01}, "tta": ["identity", "hflip"], "progress": False})
    row = run_training(cfg, str(tmp_path / "run"), data=data, plots=False)  # what `train` and every `tune` trial report
    ens = ek.Ensemble.load(str(tmp_path / "run" / "ensemble.safetensors"))
    for split, name in ((data.test, "test"), (data.val, "val")):
        x, y = split.tensors()
        by_hand = (ens.predict_proba(x) + ens.predict_proba(x.flip(-1))) / 2
        plain = evaluate_probs(ens.predict_proba(x), y)
        assert row[name]["nll"] == pytest.approx(evaluate_probs(by_hand, y)["nll"], rel=1e-6)
        assert row[name]["nll"] != pytest.approx(plain["nll"], rel=1e-4)  # a no-op TTA would report these
        assert row[name]["tta"] == ["identity", "hflip"]
    from ensemblekit.training.flops import inference_flops

    assert row["cost"]["inference_flops"] == 2 * inference_flops(ens, data.test.x[:64])  # two passes per example


def test_temperature_scaling_recovers_a_known_temperature_and_dee_by_hand():
    from ensemblekit.metrics.calibration import calibrated_nll, deep_ensemble_equivalent, fit_temperature

    torch.manual_seed(0)
    logits = 3.0 * torch.randn(4000, 5)
    y = torch.distributions.Categorical(logits=logits).sample()  # labels drawn from softmax(logits)
    overconfident = (logits * 2.5).softmax(-1)  # the same logits at temperature 1 / 2.5
    t = fit_temperature(overconfident, y)
    assert t == pytest.approx(2.5, rel=0.08)
    assert calibrated_nll(overconfident, y, t) < calibrated_nll(overconfident, y, 1.0)
    ref = [0.40, 0.30, 0.26]  # calibrated NLL of 1, 2, 3 independent members
    assert deep_ensemble_equivalent(0.45, ref) == 1.0 and deep_ensemble_equivalent(0.35, ref) == pytest.approx(1.5)
    assert deep_ensemble_equivalent(0.27, ref) == pytest.approx(2.75) and deep_ensemble_equivalent(0.2, ref) == float("inf")


def test_pareto_front_by_hand():
    from ensemblekit.report.pareto import pareto_front

    pts = [(1.0, 5.0), (2.0, 6.0), (2.0, 4.0), (3.0, 4.5), (4.0, 1.0)]
    assert pareto_front(pts) == [(1.0, 5.0), (2.0, 4.0), (4.0, 1.0)]


def test_flops_budgets_give_each_method_the_epochs_that_fit(blobs, tmp_path):
    from ensemblekit.config import CompareConfig
    from ensemblekit.experiments.compare import run_compare

    cfg = CompareConfig(data="digits", model=LINEAR, train={"epochs": 4, "batch_size": 32, "progress": False}, budgets=[1, 2], seeds=[0],
                        budget_unit="flops", methods=[{"name": "independent", "label": "Ind"}, {"name": "batch_ensemble", "members": 4},
                                                      {"name": "independent", "label": "Single", "members": 1, "budget_by": "epochs"},
                                                      {"name": "curve_ensemble", "members": 3}])
    rows = {(r["method"], r["budget"]): r for r in run_compare(cfg, str(tmp_path), data=blobs).rows}
    single = rows[("Ind", 1)]["cost"]["train_flops"]
    assert single == 96 * 240 * 4  # one Linear(8, 3) for 4 epochs
    assert rows[("Ind", 2)]["budget_kwargs"] == {"members": 2, "epochs": 4, "steps": 32, "passes": 4.0, "budget_unit": "flops",
                                                 "budget_flops": 2.0 * single}  # 240 examples / 32 = 8 steps per epoch
    assert rows[("Single", 2)]["budget_kwargs"]["epochs"] == 8 and rows[("Single", 2)]["cost"]["train_flops"] == 2 * single
    # BatchEnsemble: four members in one network, and the input factor r needs the input's gradient:
    # one epoch costs 6 single-model epochs here (measured), so 2B (8 single epochs) gets 8 / 6 epochs:
    # one pass (8 steps), then 1/3 of 240 examples = 80 = 2.5 batches of 32 -> 2 steps: 10 steps, 304 examples of the 320
    # the budget buys (whole epochs would give 1 epoch, 25% under the budget; one step is 10% of this tiny budget)
    be = rows[("batch_ensemble", 2)]
    per_epoch = ek.create_method("batch_ensemble", model=LINEAR, members=4, batch_size=32).epoch_flops(blobs)
    assert per_epoch == 6 * 96 * 240
    assert (be["budget_kwargs"]["steps"], be["budget_kwargs"]["epochs"]) == (10, 2)
    assert be["budget_kwargs"]["passes"] == pytest.approx(1 + 64 / 240, abs=1e-3)
    assert be["cost"]["train_flops"] == 6 * 96 * 304
    assert "skipped" in rows[("curve_ensemble", 1)]  # below 3B either way
    md = (tmp_path / "results.md").read_text()
    assert "## Passes over the training data per run (budget_unit: flops)" in md and "## Deep-ensemble equivalent (DEE)" in md and (tmp_path / "pareto.png").exists()
