"""The command line: config validation (exit 2, one line), train/evaluate/compare, kill -9 and --resume."""

from __future__ import annotations

import json
import re
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

RUN = {
    "data": "digits",
    "model": {"name": "mlp", "kwargs": {"hidden": [32], "dropout": 0.1}},
    "method": {"name": "independent", "members": 3},
    "train": {"epochs": 6, "batch_size": 64, "optimizer": {"name": "adam", "lr": 0.01}, "data_order": "per_member"},
    "seed": 0,
}


def _cli(*args: str, cwd=None, timeout=300, env=None) -> subprocess.CompletedProcess:
    env = {**(env or os.environ), "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "ensemblekit", *args], capture_output=True, text=True, cwd=cwd, timeout=timeout, env=env)


def _frozen_code(tmp_path) -> dict[str, str]:
    """An environment whose ``python -m ensemblekit`` runs a copy of the package under test, taken now.

    The package is an editable install of a working tree, which a clone elsewhere imports too,
    and that tree may be edited while the suite runs: processes started seconds apart could
    run different code. A promise about reruns of the same code needs one copy for all of them.
    """
    import ensemblekit

    root = tmp_path / "code"
    shutil.copytree(os.path.dirname(os.path.abspath(ensemblekit.__file__)), root / "ensemblekit",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH")) if p)}


def _tensor_digests(path) -> dict[str, str]:
    """A digest of every tensor of a safetensors file, by name (its metadata, with wall times, left out)."""
    from ensemblekit.hashing import tensor_digest
    from ensemblekit.serialization import load_tensors

    tensors, _ = load_tensors(path)
    return {name: tensor_digest(t.reshape(-1)) for name, t in tensors.items()}


def _epoch_records(run) -> list[dict]:
    """The per-epoch records of a run's ``metrics.jsonl``, without their wall times."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in rec.items() if k != "wall_s"} for rec in records if "train_loss" in rec]


def _write(path, obj) -> str:
    path.write_text(yaml.safe_dump(obj))
    return str(path)




@pytest.mark.parametrize("patch, match", [
    ({"train": {"epochs": 0}}, "train.epochs: Input should be greater than or equal to 1 (got 0)"),
    ({"train": {"epoch": 3}}, "train.epoch: unknown key; valid keys: epochs"),
    ({"train": {"epochs": "many"}}, "train.epochs: Input should be a valid integer"),
    ({"train": {"optimizer": {"name": "adam", "lr": -1}}}, "optimizer lr must be a number > 0, got -1"),
    ({"model": "cnn3d"}, "unknown model 'cnn3d'"),
    ({"data": "mnist2d"}, "unknown dataset 'mnist2d'"),
    ({"method": "boost"}, "unknown method 'boost'"),
    ({"method": {"name": "independent", "members": -1}}, "members: Input should be greater than or equal to 1"),
])
def test_bad_config_exits_2_with_one_line_and_trains_nothing(cli, tmp_path, capsys, patch, match):
    cfg = {**RUN, **patch, "out": str(tmp_path / "runs")}
    assert cli("train", _write(tmp_path / "c.yaml", cfg)) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and match in lines[0] and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


def test_bad_config_exit_code_from_a_real_process(tmp_path):
    res = _cli("compare", _write(tmp_path / "c.yaml", {"budgets": [0]}))
    assert res.returncode == 2 and "budgets" in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_bad_npz_exits_2_with_one_line(cli, tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.random.randn(20, 4), y=np.array([0, 1, 7] + [0] * 17), x_test=np.random.randn(5, 4), y_test=np.zeros(5))
    cfg = {**RUN, "data": {"npz": str(bad), "num_classes": 3}, "out": str(tmp_path / "runs")}
    res = _cli("train", _write(tmp_path / "c.yaml", cfg))
    assert res.returncode == 2
    assert "labels must be in 0..2, found values from 0 to 7" in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    nan = tmp_path / "nan.npz"
    x = np.random.randn(20, 4)
    x[3, 1] = np.nan
    np.savez(nan, x=x, y=np.arange(20) % 2)
    assert cli("train", _write(tmp_path / "c2.yaml", {**cfg, "data": {"npz": str(nan)}})) == 2


def test_train_then_evaluate(tmp_path):
    cfg = _write(tmp_path / "c.yaml", {**RUN, "out": str(tmp_path / "runs")})
    res = _cli("train", cfg, "--run-dir", str(tmp_path / "run"), "--set", "train.epochs=3")
    assert res.returncode == 0, res.stderr
    run = tmp_path / "run"
    for name in ("config.yaml", "metrics.jsonl", "results.json", "ensemble.safetensors", "reliability.png", "size_curve.png", "training_curves.png"):
        assert (run / name).exists(), name
    results = json.loads((run / "results.json").read_text())
    assert results["members"] == 3 and len(results["members_info"]) == 3
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["epochs"] == 3
    assert results["test"]["accuracy"] > 0.8
    res = _cli("evaluate", str(run))
    assert res.returncode == 0 and "ensemble" in res.stdout


def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path):
    """kill -9 during training, then ``--resume``: the same bits as a run never interrupted, in
    every epoch's log, the final checkpoint (weights, optimizer moments, RNG state), the saved
    ensemble and every test and validation metric. The resumed run continues from tensors read
    back from a checkpoint (the optimizer's moments among them), the uninterrupted one from
    tensors it made itself; all three processes run one copy of the code."""
    env = _frozen_code(tmp_path)
    cfg = _write(tmp_path / "c.yaml", {**RUN, "train": {**RUN["train"], "epochs": 12}, "out": str(tmp_path / "runs")})
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    res = _cli("train", cfg, "--run-dir", str(ref), env=env)
    assert res.returncode == 0, res.stderr
    proc = subprocess.Popen([sys.executable, "-m", "ensemblekit", "train", cfg, "--run-dir", str(killed)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = killed / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and len(log.read_text().splitlines()) >= 3:
            break
        time.sleep(0.02)
    if proc.poll() is not None:
        pytest.skip("the run finished before it could be killed (machine too fast for this check)")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "results.json").exists()
    res = _cli("train", "--resume", str(killed), env=env)
    assert res.returncode == 0, res.stderr
    a, b = (json.loads((run / "results.json").read_text()) for run in (ref, killed))
    assert a["provenance"]["code"] == b["provenance"]["code"]
    assert [r["epoch"] for r in _epoch_records(killed)] == list(range(1, 13))
    assert _epoch_records(killed) == _epoch_records(ref)  # the first record that differs names the epoch the bits parted
    assert _tensor_digests(killed / "checkpoints" / "train.safetensors") == _tensor_digests(ref / "checkpoints" / "train.safetensors")
    assert _tensor_digests(killed / "ensemble.safetensors") == _tensor_digests(ref / "ensemble.safetensors")
    for split in ("test", "val"):
        assert b[split] == a[split], split


def test_compare_writes_rows_table_and_plots(tmp_path):
    cfg = {
        "data": "digits",
        "model": {"name": "mlp", "kwargs": {"hidden": [32]}},
        "train": {"epochs": 2, "batch_size": 64, "optimizer": {"name": "adam", "lr": 0.01}},
        "budgets": [1, 2],
        "seeds": [0, 1],
        "methods": [{"name": "independent", "label": "Ind"}],
        "out": str(tmp_path / "cmp"),
    }
    res = _cli("compare", _write(tmp_path / "c.yaml", cfg))
    assert res.returncode == 0, res.stderr
    rows = json.loads((tmp_path / "cmp" / "results.json").read_text())
    assert len(rows) == 4
    for r in rows:
        assert {"method", "budget", "seed", "members", "wall_s", "test"} <= set(r)
        assert {"accuracy", "nll", "brier", "ece"} <= set(r["test"])
        assert r["members"] == r["budget"]
    md = (tmp_path / "cmp" / "results.md").read_text()
    assert "| Ind |" in md and "1B" in md and "±" in md
    assert (tmp_path / "cmp" / "error_vs_budget.png").exists() and (tmp_path / "cmp" / "error_vs_members.png").exists()
    again = _cli("compare", _write(tmp_path / "c.yaml", cfg))  # finished cells are skipped
    assert again.returncode == 0
    assert json.loads((tmp_path / "cmp" / "results.json").read_text())[0]["wall_s"] == rows[0]["wall_s"]


def test_threads_option_sets_torch_threads(cli, monkeypatch):
    import torch

    before = torch.get_num_threads()
    try:
        assert cli("--threads", "1", "list") == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert cli("--threads", "0", "list") == 2  # typer refuses a range violation


def test_compare_with_tuning_and_auto_seeds_prints_every_trial_and_says_why_it_stopped(tmp_path):
    cfg = {
        "data": "digits",
        "model": {"name": "mlp", "kwargs": {"hidden": [16]}},
        "train": {"epochs": 1, "batch_size": 64, "optimizer": {"name": "adam", "lr": 0.01}},
        "budgets": [1],
        "seeds": {"auto": {"min": 2, "max": 3}},
        "methods": [{"name": "independent", "label": "Ind"}, {"name": "mc_dropout", "label": "MCD", "members": 3}],
        "tuning": {"trials": 2, "methods": ["Ind"]},
        "out": str(tmp_path / "cmp"),
    }
    res = _cli("compare", _write(tmp_path / "c.yaml", cfg))
    assert res.returncode == 0, res.stderr
    assert "tuning 1 method(s) with 2 trials each at 1B (val_nll on validation)" in res.stdout
    assert len(re.findall(r"^tuning Ind: trial [12]/2 val_nll \d", res.stdout, flags=re.M)) == 2  # one line per trial, unwrapped
    md = (tmp_path / "cmp" / "results.md").read_text()
    assert "## Seeds" in md and "## Tuning" in md and "| Ind (tuned) |" in md
    seeds = {r["seed"] for r in json.loads((tmp_path / "cmp" / "results.json").read_text())}
    assert seeds in ({0, 1}, {0, 1, 2})
    assert ("Decided at 2 seeds" in md) == (seeds == {0, 1})
