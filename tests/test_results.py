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
    assert row["hyperparameters"] == {"members": 3} and row["test"]["tta"] == []
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
