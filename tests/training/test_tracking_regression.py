"""train.loggers: [tensorboard] on a regression run: the per-epoch regression scalars, the size curve of
RMSE and NLL and the test RMSE / NLL / CRPS as hyperparameter metrics, read back from the event files."""

from __future__ import annotations

import json

import pytest
import yaml
from optional import need

need("tensorboard", "train.loggers: [tensorboard] writes the regression scalars")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

TRAIN = {"epochs": 2, "batch_size": 64, "optimizer": {"name": "adam", "lr": 0.01}, "progress": False, "loggers": ["tensorboard"]}


def _events(folder):
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def _values(acc, tag):
    return [e.value for e in acc.Scalars(tag)]


def test_a_regression_run_logs_rmse_nll_crps_per_epoch_and_member_and_its_result(tmp_path, cli):
    cfg = {"data": "diabetes", "model": {"name": "mlp", "kwargs": {"hidden": [16]}}, "method": {"name": "independent", "members": 3},
           "train": TRAIN}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    assert cli("--threads", "1", "train", tmp_path / "run.yaml", "--run-dir", tmp_path / "run") == 0
    run = tmp_path / "run"
    acc = _events(run / "tensorboard" / "train")
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/rmse", "train/lr", "val/rmse", "val/nll", "val/crps"} <= tags
    assert {f"member{m}/{k}" for m in range(3) for k in ("val_rmse", "val_nll")} <= tags
    assert not {t for t in tags if "accuracy" in t}
    log = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [e.step for e in acc.Scalars("val/crps")] == [1, 2]
    for key, tag in (("train_rmse", "train/rmse"), ("val_rmse", "val/rmse"), ("val_nll", "val/nll"), ("val_crps", "val/crps")):
        assert _values(acc, tag) == pytest.approx([r[key] for r in log], rel=1e-6), tag
    for m in range(3):
        assert _values(acc, f"member{m}/val_rmse") == pytest.approx([r["val_member_rmse"][m] for r in log], rel=1e-6)
        assert _values(acc, f"member{m}/val_nll") == pytest.approx([r["val_member_nll"][m] for r in log], rel=1e-6)

    row = json.loads((run / "results.json").read_text())
    res = _events(run / "tensorboard" / "result")
    curve = row["test"]["size_curve"]
    assert [e.step for e in res.Scalars("size_curve/rmse")] == [1, 2, 3]
    assert _values(res, "size_curve/rmse") == pytest.approx(curve["rmse"], rel=1e-6)
    assert _values(res, "size_curve/nll") == pytest.approx(curve["nll"], rel=1e-6)
    assert "size_curve/error" not in res.Tags()["scalars"] and not res.Tags()["images"]
    for k in ("rmse", "nll", "crps"):
        assert res.Scalars(f"hparam/test_{k}")[0].value == pytest.approx(row["test"][k], rel=1e-6), k
    assert res.PluginTagToContent("hparams")
