"""compare with ``tuning:``: equal trials per method, resume without repeating a trial, one-line refusals."""

from __future__ import annotations

import json
import os

import optuna
import pytest

from ensemblekit.config import CompareConfig
from ensemblekit.errors import ConfigError
from ensemblekit.experiments.compare import run_compare
from ensemblekit.experiments.tune import compare_tuning
from ensemblekit.config.tuning import apply_values, method_space


def _cfg(**tuning):
    return CompareConfig(
        model={"name": "mlp", "kwargs": {"hidden": [16]}},
        train={"epochs": 2, "batch_size": 32, "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9}},
        budgets=[1], seeds=[0, 1],
        methods=[{"name": "independent", "label": "Ind", "members": 2}, {"name": "snapshot", "label": "SSE", "cycles": 2}],
        tuning={"trials": 2, **tuning})


def _study(out, label):
    return optuna.load_study(study_name="tuning", storage=f"sqlite:///{os.path.abspath(os.path.join(out, 'tuning', label, 'study.db'))}")


def test_every_method_gets_the_same_trials_and_its_best_setting_is_trained(blobs, tmp_path):
    res = run_compare(_cfg(), str(tmp_path), data=blobs)
    summaries = json.loads((tmp_path / "tuning.json").read_text())
    assert [(s["method"], s["trials"]) for s in summaries] == [("Ind", 2), ("SSE", 2)]
    for s in summaries:
        values = [t.value for t in _study(str(tmp_path), s["method"]).get_trials() if t.value is not None]
        assert len(values) == 2 and s["best_value"] == min(values)
        assert s["wall_s"] > 0 and s["train_flops"] > 0
    assert {r["method"] for r in res.rows} == {"Ind", "Ind (tuned)", "SSE", "SSE (tuned)"}
    tuned = next(r for r in res.rows if r["method"] == "SSE (tuned)")
    best = summaries[1]["best_params"]
    assert tuned["hyperparameters"]["cycles"] == best["cycles"]
    assert "## Tuning" in res.markdown and "2 trials each" in res.markdown


def test_a_killed_tuning_resumes_without_repeating_a_finished_trial(blobs, tmp_path, monkeypatch):
    cfg = _cfg(methods=["SSE"])
    calls: list[str] = []
    from ensemblekit.experiments import cells

    original = cells.compare_cell

    def dying(spec, **kw):
        if "folder" in spec:  # a trial (the table's cells have none)
            calls.append(spec["folder"])
        if len(calls) == 2:
            raise KeyboardInterrupt  # the process is killed during the second trial
        return original(spec, **kw)

    monkeypatch.setattr(cells, "compare_cell", dying)
    with pytest.raises(KeyboardInterrupt):
        run_compare(cfg, str(tmp_path), data=blobs)
    first = tmp_path / calls[0] / "results.json"
    stamp = first.stat().st_mtime_ns
    monkeypatch.setattr(cells, "compare_cell", lambda spec, **kw: (calls.append(spec.get("folder")), original(spec, **kw))[1])
    run_compare(cfg, str(tmp_path), data=blobs)
    trials = _study(str(tmp_path), "SSE").get_trials()
    states = [t.state.name for t in trials]
    assert states == ["COMPLETE", "FAIL", "COMPLETE"]  # the interrupted trial, then its retry
    assert trials[2].user_attrs["retry_of"] == 1 and trials[2].params == trials[1].params
    calls = [c for c in calls if c is not None]
    assert calls[2] == calls[1] and calls[0] not in calls[2:]  # the finished trial was not trained again
    assert first.stat().st_mtime_ns == stamp
    assert json.loads((tmp_path / "tuning.json").read_text())[0]["trials"] == 2


def test_a_changed_space_refuses_to_continue_the_study(blobs, tmp_path):
    run_compare(_cfg(methods=["Ind"]), str(tmp_path), data=blobs)
    changed = _cfg(methods=["Ind"], space={"Ind": {"members": {"type": "int", "low": 1, "high": 3}}})
    with pytest.raises(ConfigError, match="tuning of Ind was started with a different space"):
        run_compare(changed, str(tmp_path), data=blobs)


@pytest.mark.parametrize("tuning, message", [
    ({"methods": ["nope"]}, "tuning names methods the comparison does not have"),
    ({"budget": 3}, "tuning.budget 3 is not one of the budgets"),
    ({"space": {"SSE": {"cycles": {"type": "int", "low": 0, "high": 4}}}}, r"tuning.space.SSE.cycles: 0 makes the method invalid"),
    ({"trials": 0}, "greater than or equal to 1"),
    ({"per_method": {"Ind": 3}}, "Extra inputs"),  # one trial count for all: a method cannot be given more
])
def test_bad_tuning_blocks_are_refused(tuning, message):
    with pytest.raises(Exception, match=message):
        _cfg(**tuning)


def test_default_space_and_setting_values():
    cfg = _cfg()
    space = method_space(cfg.methods[1], cfg.train, cfg.tuning)
    assert sorted(space) == ["cycles", "min_lr", "train.optimizer.lr", "train.optimizer.weight_decay"]
    lr = space["train.optimizer.lr"]
    assert (lr.low, lr.high, lr.log) == (pytest.approx(0.01), pytest.approx(0.25), True)  # [lr / 5, lr * 5]
    entry = apply_values(cfg.methods[1], cfg.train, {"train.optimizer.lr": 0.1, "cycles": 3})
    assert entry["train"]["optimizer"] == {"name": "sgd", "lr": 0.1, "momentum": 0.9}  # the other arguments kept
    assert entry["params"]["cycles"] == 3


def test_regression_over_random_splits_tunes_on_the_first_split_by_validation_rmse(tmp_path):
    cfg = CompareConfig(data={"name": "diabetes", "splits": 2}, model={"name": "mlp", "kwargs": {"hidden": [16]}},
                        train={"epochs": 3, "batch_size": 64, "optimizer": {"name": "adam", "lr": 0.01}},
                        budgets=[1], seeds=[0], methods=[{"name": "independent", "label": "Ind", "members": 2}],
                        tuning={"trials": 2, "objective": "val_rmse", "untuned": False})
    res = run_compare(cfg, str(tmp_path))
    assert sorted((r["method"], r["split"]) for r in res.rows) == [("Ind (tuned)", 0), ("Ind (tuned)", 1)]
    summary = json.loads((tmp_path / "tuning.json").read_text())[0]
    trial_rows = [json.loads(p.read_text()) for p in (tmp_path / "tuning" / "Ind" / "trials").glob("*/results.json")]
    assert len(trial_rows) == 2 and {r["split"] for r in trial_rows} == {0}
    assert summary["best_value"] == min(r["val"]["rmse"] for r in trial_rows)
