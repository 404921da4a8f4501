"""Execution backends: local vs Ray give the same comparison, a killed worker resumes, errors are reported."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from ensemblekit.config import CompareConfig
from ensemblekit.errors import ConfigError, DataError
from ensemblekit.experiments.backends import LocalBackend, get_backend
from ensemblekit.experiments.compare import cell_specs, compare_cell, run_compare
from optional import need

ray = need("ray", "compare on the Ray backend equals the local one, and a killed worker resumes")


def _cfg() -> CompareConfig:
    return CompareConfig(
        model={"name": "mlp", "kwargs": {"hidden": [16], "batchnorm": True, "dropout": 0.1}},
        train={"epochs": 2, "batch_size": 32, "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9}, "progress": False},
        budgets=[1, 2],
        seeds=[1],
        methods=[{"name": "independent", "label": "Ind"}],
    )


def _strip(rows):
    """Rows without wall-clock fields and provenance (the only ones allowed to differ between backends)."""
    if isinstance(rows, list):
        return [_strip(r) for r in rows]
    if isinstance(rows, dict):
        return {k: _strip(v) for k, v in rows.items() if not (k.endswith("_s") or k in ("seconds", "provenance", "stages_s"))}
    return rows


# --- units defined here are shipped to the workers by value (this module is not importable there)
def _fails(spec: dict, **context) -> dict:
    if spec["key"] == "bad":
        raise DataError("labels out of range in unit bad")
    return {"key": spec["key"], "double": 2 * spec["x"]}


def _killed_once(spec: dict, *, out_dir: str, data, marks: str) -> dict:
    """A compare cell whose first attempt dies (os._exit) right after its epoch-1 checkpoint."""
    from ensemblekit.training.checkpoint import RunDir

    first = os.path.join(marks, "attempt1")
    if not os.path.exists(first):
        open(first, "w").close()
        save = RunDir.save_checkpoint

        def save_then_die(self, stage, state):
            save(self, stage, state)
            if int(state["epoch"]) == 1 and not state["finished"]:
                os._exit(1)  # the worker process dies: Ray retries the task in a new worker

        RunDir.save_checkpoint = save_then_die
    else:
        load = RunDir.load_checkpoint

        def load_and_note(self, stage, device="cpu", **kwargs):
            state = load(self, stage, device, **kwargs)
            if state is not None:
                with open(os.path.join(marks, "resumed_from_epoch"), "w") as f:
                    f.write(str(int(state["epoch"])))
            return state

        RunDir.load_checkpoint = load_and_note
    return compare_cell(spec, out_dir=out_dir, data=data)


@pytest.fixture(scope="module")
def ray_cluster():
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def local_rows(tmp_path_factory):
    import ensemblekit as ek
    import numpy as np

    rng = np.random.default_rng(0)  # the `blobs` fixture's data (that fixture is function-scoped)
    centers = rng.normal(0, 2.0, size=(3, 8))
    y = np.arange(390) % 3
    x = centers[y] + rng.normal(0, 1.0, size=(390, 8))
    data = ek.from_arrays(x[:300], y[:300], x[300:], y[300:], val_fraction=0.2, seed=0, name="blobs")
    out = tmp_path_factory.mktemp("local")
    # CPU float sums depend on the thread count: run with the threads a 1-cpu Ray task uses
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_compare(_cfg(), str(out), data=data, backend=LocalBackend())
    finally:
        torch.set_num_threads(threads)
    return data, json.loads((out / "results.json").read_text())


def test_ray_compare_equals_local(ray_cluster, local_rows, tmp_path):
    data, expected = local_rows
    seen = []
    rows = run_compare(_cfg(), str(tmp_path), data=data, backend=get_backend("ray", num_cpus=1), on_done=lambda s, r: seen.append(s["key"])).rows
    got = json.loads((tmp_path / "results.json").read_text())
    assert len(got) == 2 and all("failed" not in r for r in got)
    assert _strip(got) == _strip(expected)  # every field but wall-clock times
    assert sorted(seen) == sorted(r["key"] for r in cell_specs(_cfg())) and _strip(rows) == _strip(got)
    assert (tmp_path / "results.md").exists() and (tmp_path / "error_vs_budget.png").exists()


def test_killed_worker_is_retried_and_resumes(ray_cluster, local_rows, tmp_path):
    data, expected = local_rows
    spec = next(s for s in cell_specs(_cfg()) if s["key"] == "Ind-b2-s1")
    marks = tmp_path / "marks"
    marks.mkdir()
    [out] = get_backend("ray", max_retries=1).map(_killed_once, [spec], context={"out_dir": str(tmp_path), "data": data, "marks": str(marks)})
    assert out.ok, out.error
    assert (marks / "resumed_from_epoch").read_text() == "1"  # the retry continued from the dead worker's checkpoint
    want = next(r for r in expected if r["method"] == "Ind" and r["budget"] == 2 and r["seed"] == 1)
    assert _strip([out.value]) == _strip([want])  # and reached the uninterrupted run's numbers


def test_killed_worker_without_retries_is_reported(ray_cluster, local_rows, tmp_path):
    data, _ = local_rows
    spec = cell_specs(_cfg())[0]
    (tmp_path / "marks").mkdir()
    [out] = get_backend("ray", max_retries=0).map(_killed_once, [spec], context={"out_dir": str(tmp_path), "data": data, "marks": str(tmp_path / "marks")})
    assert not out.ok and "after 0 retries" in out.error


def test_failing_unit_is_reported_not_raised(ray_cluster):
    specs = [{"key": "a", "x": 1}, {"key": "bad", "x": 2}, {"key": "c", "x": 3}]
    done = []
    outs = get_backend("ray").map(_fails, specs, on_done=lambda s, o: done.append(o.key))
    assert [o.key for o in outs] == ["a", "bad", "c"]
    assert [o.value for o in outs] == [{"key": "a", "double": 2}, None, {"key": "c", "double": 6}]
    assert outs[1].error == "DataError: labels out of range in unit bad" and "Traceback" in outs[1].info["traceback"]
    assert sorted(done) == ["a", "bad", "c"]
    assert get_backend("ray").map(_fails, []) == []


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"num_cpus": 0}, r"`num_cpus` \(--cpus-per-run\) must be a number > 0, got 0"),
        ({"num_cpus": "2"}, r"`num_cpus` \(--cpus-per-run\) must be a number > 0, got '2'"),
        ({"num_gpus": -1}, r"`num_gpus` \(--gpus-per-run\) must be a number >= 0, got -1"),
        ({"max_retries": 1.5}, r"`max_retries` must be an integer >= 0, got 1.5"),
        ({"address": ""}, r"`address` must be a non-empty string"),
    ],
)
def test_option_validation(options, match):
    with pytest.raises(ConfigError, match=match):
        get_backend("ray", **options)


def test_unknown_backend():
    with pytest.raises(ConfigError, match=r"unknown backend 'dask'; valid: local, ray"):
        get_backend("dask")


def test_base_package_does_not_import_ray():
    code = ("import sys, ensemblekit, ensemblekit.cli, ensemblekit.experiments.compare, ensemblekit.experiments.backends; "
            "assert 'ray' not in sys.modules, 'ray was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_tune_trials_run_as_ray_units_sharing_the_study(ray_cluster, tmp_path):
    from ensemblekit.config import parse_config
    from ensemblekit.experiments.tune import TuneConfig, run_tune

    base = {"data": "digits", "model": {"name": "mlp", "kwargs": {"hidden": [16]}}, "method": {"name": "independent", "members": 1},
            "train": {"epochs": 2, "batch_size": 64, "optimizer": {"name": "adam", "lr": 0.01}, "progress": False}, "seed": 0}
    search = {"sampler": "grid", "params": {"train.optimizer.lr": {"type": "float", "low": 1e-3, "high": 0.1, "log": True, "grid": [0.003, 0.03]},
                                            "train.batch_size": {"type": "int", "low": 32, "high": 64, "step": 32, "grid": [64]}}}
    cfg = parse_config({"base": base, "search": search, "out": str(tmp_path / "tune")}, TuneConfig)
    seen = []
    res = run_tune(cfg, progress=seen.append, backend=get_backend("ray"))
    done = sorted((r["params"]["train.optimizer.lr"], r["params"]["train.batch_size"]) for r in res["trials"] if r["state"] == "COMPLETE")
    assert done == [(0.003, 64), (0.03, 64)]  # every grid point once, told by the workers
    assert sorted(r["number"] for r in seen) == [0, 1]
    assert (tmp_path / "tune" / "best.yaml").exists() and res["value"] > 0.5




def test_cli_compare_on_ray_and_a_restarted_driver_skips_finished_cells(cli, ray_cluster, tmp_path, capsys):
    import yaml

    cfg = {"data": "digits", "model": {"name": "mlp", "kwargs": {"hidden": [16]}},
           "train": {"epochs": 1, "batch_size": 64, "optimizer": {"name": "adam", "lr": 0.01}, "progress": False},
           "budgets": [1], "seeds": [0, 1], "methods": [{"name": "independent", "label": "Ind"}], "out": str(tmp_path / "cmp")}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    args = ("compare", str(tmp_path / "c.yaml"), "--backend", "ray", "--cpus-per-run", "1")
    assert cli(*args) == 0
    first = json.loads((tmp_path / "cmp" / "results.json").read_text())
    kept, redo = (tmp_path / "cmp" / "cells" / "Ind-b1-s0" / "results.json"), (tmp_path / "cmp" / "cells" / "Ind-b1-s1" / "results.json")
    stamp = kept.stat().st_mtime_ns
    redo.unlink()  # as if the driver had died before this cell finished
    assert cli(*args) == 0
    assert kept.stat().st_mtime_ns == stamp and redo.exists()  # only the missing cell ran again
    assert _strip(json.loads((tmp_path / "cmp" / "results.json").read_text())) == _strip(first)
    assert "[2/2] Ind 1B seed" in capsys.readouterr().out


@pytest.mark.parametrize(("args", "match"), [
    (("--address", "auto"), "--address need(s) --backend ray, got --backend local"),
    (("--backend", "ray", "--gpus-per-run", "-1"), "`num_gpus` (--gpus-per-run) must be a number >= 0, got -1.0"),
    (("--backend", "spark"), "unknown backend 'spark'; valid: local, ray"),
])
def test_cli_backend_options_are_checked_before_any_run(cli, tmp_path, capsys, args, match):
    (tmp_path / "c.yaml").write_text("data: digits\nout: " + str(tmp_path / "cmp") + "\n")
    assert cli("compare", str(tmp_path / "c.yaml"), *args) == 2
    assert match in capsys.readouterr().err
    assert not (tmp_path / "cmp").exists()


def _tune_trial_killed_once(spec: dict, **context) -> dict:
    """A tuning unit whose first attempt dies right after its epoch-1 checkpoint."""
    from ensemblekit.experiments.tune.search import tune_trial

    marks = os.path.join(context["out"], "marks")
    os.makedirs(marks, exist_ok=True)
    from ensemblekit.training.checkpoint import RunDir

    if not os.path.exists(os.path.join(marks, "attempt1")):
        open(os.path.join(marks, "attempt1"), "w").close()
        save = RunDir.save_checkpoint

        def save_then_die(self, stage, state):
            save(self, stage, state)
            if int(state["epoch"]) == 1 and not state["finished"]:
                os._exit(1)

        RunDir.save_checkpoint = save_then_die
    else:
        open(os.path.join(marks, "attempt2"), "w").close()
    return tune_trial(spec, **context)


def test_tune_unit_whose_worker_died_takes_over_its_trial(ray_cluster, tmp_path, monkeypatch):
    from ensemblekit.config import parse_config
    from ensemblekit.experiments.tune import TuneConfig, run_tune
    from ensemblekit.experiments.tune import search as tune_mod

    monkeypatch.setattr(tune_mod, "tune_trial", _tune_trial_killed_once)
    base = {"data": "digits", "model": {"name": "mlp", "kwargs": {"hidden": [16]}}, "method": {"name": "independent", "members": 1},
            "train": {"epochs": 2, "batch_size": 64, "optimizer": {"name": "adam", "lr": 0.01}, "progress": False}, "seed": 0}
    search = {"sampler": "grid", "params": {"train.optimizer.lr": {"type": "float", "low": 1e-3, "high": 0.1, "log": True, "grid": [0.003]}}}
    cfg = parse_config({"base": base, "search": search, "out": str(tmp_path / "tune")}, TuneConfig)
    res = run_tune(cfg, progress=False, backend=get_backend("ray", max_retries=1))
    assert (tmp_path / "tune" / "marks" / "attempt2").exists()  # the first attempt died, Ray ran the unit again
    assert [(r["number"], r["state"]) for r in res["trials"]] == [(0, "COMPLETE")]  # the retry took over trial 0
    log = [json.loads(line) for line in (tmp_path / "tune" / "trials" / "0" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log if "epoch" in r and "val_acc" in r] == [1, 2]
