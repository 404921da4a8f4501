"""train.loggers: [tensorboard] — event files read back: tags, steps, one run per compare cell."""

from __future__ import annotations

import pytest
import yaml
from optional import need

need("tensorboard", "train.loggers: [tensorboard] writes readable event files")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

TRAIN = {"epochs": 3, "batch_size": 64, "optimizer": {"name": "adam", "lr": 0.01}, "progress": False, "loggers": ["tensorboard"]}


def _events(folder):
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_train_writes_per_epoch_member_and_ensemble_scalars_and_the_result(tmp_path, cli):
    cfg = {"data": "digits", "model": {"name": "mlp", "kwargs": {"hidden": [16]}}, "method": {"name": "independent", "members": 3},
           "train": TRAIN}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    assert cli("train", tmp_path / "run.yaml", "--run-dir", tmp_path / "run") == 0
    acc = _events(tmp_path / "run" / "tensorboard" / "train")
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/accuracy", "train/lr", "val/accuracy", "val/nll", "val/member_accuracy"} <= tags
    assert {f"member{m}/{k}" for m in range(3) for k in ("val_accuracy", "val_nll")} <= tags
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 2, 3]
    assert [e.step for e in acc.Scalars("member2/val_nll")] == [1, 2, 3]
    log = [__import__("json").loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [round(e.value, 5) for e in acc.Scalars("val/accuracy")] == [round(r["val_acc"], 5) for r in log]
    res = _events(tmp_path / "run" / "tensorboard" / "result")
    assert [e.step for e in res.Scalars("size_curve/error")] == [1, 2, 3]
    assert res.Tags()["images"] == ["reliability"]


def test_compare_logs_one_run_per_cell_with_hyperparameters(tmp_path, cli):
    cfg = {"data": "digits", "model": {"name": "mlp", "kwargs": {"hidden": [8]}}, "train": {**TRAIN, "epochs": 1},
           "budgets": [1], "seeds": [0, 1], "methods": [{"name": "independent", "label": "Ind"}], "out": str(tmp_path / "cmp")}
    (tmp_path / "cmp.yaml").write_text(yaml.safe_dump(cfg))
    assert cli("compare", tmp_path / "cmp.yaml") == 0
    runs = sorted(p.parent.parent for p in (tmp_path / "cmp").rglob("tensorboard/result"))
    assert len(runs) == 2
    for run in runs:
        acc = _events(run / "tensorboard" / "result")
        row = __import__("json").loads((run / "results.json").read_text())
        assert acc.Scalars("hparam/test_error")[0].value == pytest.approx(row["test"]["error"], rel=1e-6)
        assert acc.PluginTagToContent("hparams")  # the HParams view's experiment and session records


def test_unknown_logger_is_a_config_error(tmp_path, cli, capsys):
    cfg = {"data": "digits", "model": "mlp", "method": "independent", "train": {**TRAIN, "loggers": ["wandb"]}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    assert cli("train", tmp_path / "run.yaml", "--run-dir", tmp_path / "run") == 2
    assert "unknown logger 'wandb'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
