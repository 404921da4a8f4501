"""Hyperparameter search: report files, resume after an interruption, grid coverage, pruning,
coarse-to-fine narrowing (hand values), failed trials, config errors, the CLI command."""

from __future__ import annotations

import csv
import json
import math
import os

import numpy as np
import optuna
import pytest
import torch
import yaml
from optuna.trial import TrialState

from ensemblekit.config import RunConfig, load_yaml, parse_config
from ensemblekit.errors import ConfigError, NonFiniteLossError
from ensemblekit.experiments.tune import search as tune_mod
from ensemblekit.experiments.run import run_training
from ensemblekit.experiments.tune import ParamSpec, RefineConfig, TrialReporter, TuneConfig, narrow_param, refine_space, run_tune
from ensemblekit.training.callbacks import Callback

BASE = {
    "data": "digits",
    "model": {"name": "mlp", "kwargs": {"hidden": [32]}},
    "method": {"name": "independent", "members": 1},
    "train": {"epochs": 2, "batch_size": 64, "optimizer": {"name": "adam", "lr": 0.01}, "progress": False},
    "seed": 0,
}
LR = {"type": "float", "low": 1e-3, "high": 0.1, "log": True}


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: one intra-op thread is faster, and steady when the 2 cores are shared."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _cfg(tmp_path, search: dict, base: dict | None = None, **extra) -> TuneConfig:
    return parse_config({"base": base or BASE, "search": search, "out": str(tmp_path / "tune"), **extra}, TuneConfig)


def _study(out, name: str = "tune") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{os.path.abspath(os.path.join(out, 'study.db'))}")


def _trainings(monkeypatch) -> list[str]:
    """Count the trainings that actually run (their run directories)."""
    dirs: list[str] = []

    def counting(cfg, run_dir, **kwargs):
        dirs.append(os.path.basename(run_dir))
        return run_training(cfg, run_dir, **kwargs)

    monkeypatch.setattr(tune_mod, "run_training", counting)
    return dirs


class _InterruptAt(Callback):
    """Ctrl-C during the first epoch of the ``k``-th training (0-based)."""

    def __init__(self, k: int) -> None:
        self.k, self.started = k, -1

    def on_train_start(self, trainer) -> None:
        self.started += 1

    def on_epoch_end(self, trainer, epoch, logs) -> None:
        if self.started == self.k:
            raise KeyboardInterrupt


def test_random_search_with_refine_writes_the_report(tmp_path):
    cfg = _cfg(tmp_path, {
        "sampler": "random", "trials": 5, "metric": "val_acc",
        "refine": {"trials": 2, "shrink": 0.5},
        "params": {"train.optimizer.lr": {**LR, "low": 1e-4, "high": 0.1}, "train.batch_size": {"type": "categorical", "choices": [32, 64, 128]}},
    })
    res = run_tune(cfg, progress=False)
    out = tmp_path / "tune"
    for name in ("study.db", "trials.csv", "trials.md", "best.yaml", "best.json", "objective_vs_params.png"):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader(open(out / "trials.csv")))
    assert [(r["stage"], r["state"]) for r in rows] == [("coarse", "COMPLETE")] * 5 + [("refine", "COMPLETE")] * 2
    values = [float(r["val_acc"]) for r in rows]
    assert res["value"] == pytest.approx(max(values))
    best = json.loads((out / "best.json").read_text())
    assert best["value"] == pytest.approx(max(values)) and best["stage"] in ("coarse", "refine")
    # best.yaml is a complete, valid training config holding the best parameters
    best_cfg = parse_config(load_yaml(str(out / "best.yaml")), RunConfig)
    assert best_cfg.train.optimizer["lr"] == pytest.approx(best["params"]["train.optimizer.lr"])
    assert best_cfg.train.batch_size == best["params"]["train.batch_size"] and best_cfg.train.epochs == 2
    assert "| coarse | 0 (baseline) | COMPLETE |" in (out / "trials.md").read_text()
    # the refine stage searched [b / f, b * f] around the best coarse lr, with the batch size fixed
    coarse = _study(out).best_trial
    f = (0.1 / 1e-4) ** 0.25
    lo, hi = max(coarse.params["train.optimizer.lr"] / f, 1e-4), min(coarse.params["train.optimizer.lr"] * f, 0.1)
    refine = _study(out, "tune-refine").trials
    assert len(refine) == 2 and set(refine[0].params) == {"train.optimizer.lr"}
    assert all(lo <= t.params["train.optimizer.lr"] <= hi for t in refine)
    assert all(r["params"]["train.batch_size"] == coarse.params["train.batch_size"] for r in res["trials"] if r["stage"] == "refine")


@pytest.mark.parametrize("how", ["ctrl-c", "kill"])
def test_resume_runs_only_the_missing_trials_and_retries_the_interrupted_one(tmp_path, monkeypatch, how):
    cfg = _cfg(tmp_path, {"sampler": "random", "trials": 5, "params": {"train.optimizer.lr": LR}})
    out = tmp_path / "tune"
    if how == "ctrl-c":
        with pytest.raises(KeyboardInterrupt):
            run_tune(cfg, progress=False, callbacks=[_InterruptAt(2)])
        interrupted = _study(out).trials[2]
        assert interrupted.state == TrialState.FAIL and (out / "trials" / "2").exists()
    else:  # a process killed by SIGKILL leaves its trial RUNNING (and its folder half written)
        run_tune(cfg.model_copy(update={"search": cfg.search.model_copy(update={"trials": 2})}), progress=False)
        study = _study(out)
        trial = study.ask()
        ParamSpec(**LR).suggest(trial, "train.optimizer.lr")
        (out / "trials" / "2").mkdir()
        interrupted = _study(out).trials[2]
        assert interrupted.state == TrialState.RUNNING
    mtimes = {n: os.path.getmtime(out / "trials" / str(n) / "results.json") for n in (0, 1)}

    ran = _trainings(monkeypatch)
    res = run_tune(cfg, progress=False)
    trials = _study(out).trials
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 5
    assert trials[2].state == TrialState.FAIL and not (out / "trials" / "2").exists()
    assert ran == ["3", "4", "5"]  # the retry first, then the two missing trials; 0 and 1 not re-run
    assert {n: os.path.getmtime(out / "trials" / str(n) / "results.json") for n in (0, 1)} == mtimes
    retry = trials[3]
    assert retry.user_attrs["retry_of"] == 2 and retry.params == interrupted.params
    assert [r["state"] for r in res["trials"]].count("COMPLETE") == 5
    assert "interrupted" in next(r["error"] for r in res["trials"] if r["number"] == 2)
    # running it again trains nothing
    ran.clear()
    run_tune(cfg, progress=False)
    assert ran == []


def test_grid_covers_every_point_once_even_across_an_interruption(tmp_path):
    cfg = _cfg(tmp_path, {"sampler": "grid", "params": {
        "train.optimizer.lr": {**LR, "grid": [0.003, 0.03]},
        "train.batch_size": {"type": "int", "low": 32, "high": 64, "step": 32},
    }})
    assert cfg.search.stage_trials == 4
    with pytest.raises(KeyboardInterrupt):
        run_tune(cfg, progress=False, callbacks=[_InterruptAt(1)])
    res = run_tune(cfg, progress=False)
    done = [(r["params"]["train.optimizer.lr"], r["params"]["train.batch_size"]) for r in res["trials"] if r["state"] == "COMPLETE"]
    assert sorted(done) == [(0.003, 32), (0.003, 64), (0.03, 32), (0.03, 64)]


def test_pruning_stops_a_bad_trial_early(tmp_path):
    base = {**BASE, "train": {**BASE["train"], "epochs": 3}}
    cfg = _cfg(tmp_path, {"sampler": "grid", "prune": {"startup_trials": 1},
                          "params": {"train.optimizer.lr": {"type": "categorical", "choices": [0.01, 1e-6]}}}, base)
    res = run_tune(cfg, progress=False)
    states = {r["params"]["train.optimizer.lr"]: r["state"] for r in res["trials"]}
    assert states == {0.01: "COMPLETE", 1e-6: "PRUNED"}
    pruned = next(r for r in res["trials"] if r["state"] == "PRUNED")
    epochs = (tmp_path / "tune" / pruned["dir"] / "metrics.jsonl").read_text().strip().splitlines()
    assert len(epochs) == 1  # stopped after its first epoch instead of training 3
    assert res["params"] == {"train.optimizer.lr": 0.01}


def test_reporter_reports_each_epoch_stops_and_raises_pruned(tmp_path):
    class FakeTrial:
        def __init__(self) -> None:
            self.reports: list[tuple[float, int]] = []

        def report(self, value, step) -> None:
            self.reports.append((value, step))

        def should_prune(self) -> bool:
            return len(self.reports) >= 2

    trial = FakeTrial()
    cfg = parse_config({**BASE, "train": {**BASE["train"], "epochs": 5}}, RunConfig)
    with pytest.raises(optuna.TrialPruned, match="pruned after epoch 2"):
        run_training(cfg, str(tmp_path / "run"), callbacks=[TrialReporter(trial, "val_nll", prune=True)])
    assert [s for _, s in trial.reports] == [1, 2] and all(v > 0 for v, _ in trial.reports)
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().strip().splitlines()) == 2


def test_failed_trials_are_recorded_and_never_repeated(tmp_path, monkeypatch):
    def diverging(cfg, run_dir, **kwargs):
        if cfg.train.batch_size == 32:
            raise NonFiniteLossError("train: the loss became non-finite at epoch 1")
        return run_training(cfg, run_dir, **kwargs)

    monkeypatch.setattr(tune_mod, "run_training", diverging)
    cfg = _cfg(tmp_path, {"sampler": "grid", "params": {"train.batch_size": {"type": "categorical", "choices": [32, 64]}}})
    res = run_tune(cfg, progress=False)
    failed = [r for r in res["trials"] if r["state"] == "FAIL"]
    assert len(failed) == 1 and "non-finite" in failed[0]["error"] and res["params"] == {"train.batch_size": 64}
    assert "non-finite" in (tmp_path / "tune" / "trials.md").read_text()
    ran = _trainings(monkeypatch)
    run_tune(cfg, progress=False)
    assert ran == []


def test_parallel_trials(tmp_path):
    cfg = _cfg(tmp_path, {"sampler": "random", "trials": 4, "n_jobs": 2, "params": {"train.optimizer.lr": LR}})
    seen = []
    res = run_tune(cfg, progress=seen.append)
    assert len(seen) == 4 and sorted(r["number"] for r in res["trials"]) == [0, 1, 2, 3]
    assert all(r["state"] == "COMPLETE" for r in res["trials"])


def test_narrowing_by_hand():
    log = ParamSpec(type="float", low=1e-4, high=1e-1, log=True)
    s = narrow_param(log, 1e-2, 0.5)  # f = (1e3) ** 0.25 = 5.623
    assert (s.low, s.high, s.log) == (pytest.approx(1.778e-3, rel=1e-3), pytest.approx(5.623e-2, rel=1e-3), True)
    s = narrow_param(log, 1e-4, 0.5)  # clipped at the lower bound
    assert (s.low, s.high) == (pytest.approx(1e-4), pytest.approx(5.623e-4, rel=1e-3))
    s = narrow_param(ParamSpec(type="float", low=0.0, high=1.0), 0.9, 0.4)  # window 0.4 centred on 0.9, clipped
    assert (s.low, s.high) == (pytest.approx(0.7), 1.0)
    s = narrow_param(ParamSpec(type="int", low=16, high=64), 32, 0.25)  # window 12 -> [26, 38]
    assert (s.low, s.high) == (26, 38) and isinstance(s.low, int)
    assert narrow_param(ParamSpec(type="int", low=16, high=64, step=16), 32, 0.25) is None  # only 32 left on the lattice
    s = narrow_param(ParamSpec(type="int", low=16, high=64, step=16), 32, 0.75)  # [14, 50] -> lattice [16, 48]
    assert (s.low, s.high, s.step) == (16, 48, 16)
    params = {"lr": log, "bs": ParamSpec(type="categorical", choices=[50, 100])}
    space, fixed = refine_space(params, {"lr": 1e-2, "bs": 100}, RefineConfig(trials=3, shrink=0.5))
    assert set(space) == {"lr"} and fixed == {"bs": 100}
    space, fixed = refine_space(params, {"lr": 1e-2, "bs": 100}, RefineConfig(trials=3, shrink=0.5, keep_categorical=True))
    assert space["bs"].choices == [50, 100] and fixed == {}
    assert math.isclose(space["lr"].high / space["lr"].low, 1e3 ** 0.5)


@pytest.mark.parametrize("patch, match", [
    ({"bogus": 1}, r"^config: bogus: unknown key; valid keys: base, search, out, name$"),
    ({"search": {"trials": 3, "params": {"train.optimizer.lr": {"type": "float", "low": 0.1, "high": 0.001}}}},
     r"search\.params\.train\.optimizer\.lr: low must be < high, got low=0\.1, high=0\.001"),
    ({"search": {"trials": 3, "params": {"train.optimizer.lr": {**LR, "low": 0}}}}, r"train\.optimizer\.lr: log: true needs low > 0"),
    ({"search": {"trials": 3, "params": {"train.optimizer.lr": {**LR, "hgh": 1}}}}, r"search\.params\.train\.optimizer\.lr\.hgh: unknown key"),
    ({"search": {"trials": 3, "params": {"train.optimzer.lr": LR}}}, r"params\.train\.optimzer\.lr: setting 0\.001 there makes base invalid: train\.optimzer: unknown key"),
    ({"search": {"sampler": "grid", "params": {"train.optimizer.lr": LR}}}, r"search\.params: train\.optimizer\.lr: the grid sampler needs `grid: \[\.\.\]`"),
    ({"search": {"sampler": "tpe", "params": {"train.optimizer.lr": LR}}}, r"search\.trials: Value error, give the number of trials|search\.trials: give the number of trials"),
    ({"search": {"trials": 3, "params": {"train.batch_size": {"type": "categorical", "choices": []}}}}, r"train\.batch_size: a categorical parameter needs a non-empty list"),
    ({"base": {**BASE, "data": {"name": "digits", "val_fraction": 0}}}, r"base: data\.val_fraction must be > 0"),
])
def test_bad_tune_config_is_one_line_naming_the_field(tmp_path, patch, match):
    raw = {"base": BASE, "search": {"trials": 3, "params": {"train.optimizer.lr": LR}}, **patch}
    with pytest.raises(ConfigError, match=match) as exc:
        parse_config(raw, TuneConfig)
    assert "\n" not in str(exc.value)


def test_data_without_validation_split_fails_before_training(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "blobs.npz", x=rng.normal(size=(120, 4)).astype(np.float32), y=np.arange(120) % 3)
    base = {**BASE, "data": {"npz": str(tmp_path / "blobs.npz"), "val_fraction": 0}}
    cfg = _cfg(tmp_path, {"trials": 2, "params": {"train.optimizer.lr": LR}}, base)
    ran = _trainings(monkeypatch)
    with pytest.raises(ConfigError, match="no validation split"):
        run_tune(cfg, progress=False)
    assert ran == []


def test_changed_search_in_the_same_study_is_refused(tmp_path):
    grid = {"sampler": "grid", "params": {"train.batch_size": {"type": "categorical", "choices": [64]}}}
    run_tune(_cfg(tmp_path, grid), progress=False)
    other = {"sampler": "grid", "params": {"train.batch_size": {"type": "categorical", "choices": [32]}}}
    with pytest.raises(ConfigError, match="was started with a different params"):
        run_tune(_cfg(tmp_path, other), progress=False)


def test_cli_tune(tmp_path, capsys):
    from ensemblekit.cli import main

    path = tmp_path / "tune.yaml"
    path.write_text(yaml.safe_dump({"base": BASE, "search": {"sampler": "grid", "params": {"train.batch_size": {"type": "categorical", "choices": [32, 64]}}}}))
    with pytest.raises(SystemExit) as exc:
        main(["tune", str(path), "--out", str(tmp_path / "out"), "--set", "base.train.epochs=1"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "best.yaml" in text and "COMPLETE" in text
    assert parse_config(load_yaml(str(tmp_path / "out" / "best.yaml")), RunConfig).train.epochs == 1
    with pytest.raises(SystemExit) as exc:
        main(["tune", str(path), "--set", "search.sampler=annealing"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "search.sampler" in err[0]


def test_tune_on_mnist1d_beats_the_base_configs_own_values(tmp_path):
    """A small search on MNIST-1D finds a recipe with better validation accuracy than the defaults (trial 0)."""
    cfg = TuneConfig(**{
        "base": {"data": {"name": "mnist1d", "val_fraction": 0.1}, "model": "cnn1d", "method": {"name": "independent", "members": 1},
                 "train": {"epochs": 3, "batch_size": 100, "optimizer": {"name": "adam", "lr": 1e-3}, "progress": False}},
        "search": {"sampler": "random", "trials": 4, "params": {"train.optimizer.lr": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True}}},
        "out": str(tmp_path / "tune"),
    })
    best = run_tune(cfg)
    assert best["baseline_value"] is not None
    assert best["value"] > best["baseline_value"] + 0.05
