"""The command line on a regression run: train (and resume) prints and records the Gaussian metrics,
evaluate prints regression tables (with variance scaling, conformal intervals, shift, OOD), predict
and export give the library's numbers, and bad regression inputs fail in one line, writing nothing.

Every number is checked against the library computing it from the saved ensemble and the data."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import sys

import numpy as np
import pytest
import torch
import yaml

import ensemblekit as ek
from ensemblekit.evaluation.predict import regression_outputs
from ensemblekit.metrics.regression_summary import evaluate_gaussian
from ensemblekit.predictors import load_predictor

TRAIN = {"epochs": 2, "batch_size": 64, "optimizer": {"name": "adam", "lr": 0.01}, "progress": False}
RUN = {"data": {"name": "diabetes"}, "model": {"name": "mlp", "kwargs": {"hidden": [16]}},
       "method": {"name": "independent", "members": 3}, "train": TRAIN}


def _main(*args: str) -> tuple[int, str, str]:
    """Run the command line in-process: ``(exit code, stdout, stderr)`` (rich at a wide width, one line per message)."""
    from ensemblekit.cli import main

    out, err = io.StringIO(), io.StringIO()
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "2000"
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exc:
            main([str(a) for a in args])
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old
    return exc.value.code or 0, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def reg_run(tmp_path_factory):
    """One finished regression run (diabetes, 3 MLP members, 2 epochs) and what `train` printed."""
    root = tmp_path_factory.mktemp("regression")
    (root / "r.yaml").write_text(yaml.safe_dump(RUN))
    code, out, err = _main("train", root / "r.yaml", "--run-dir", root / "run")
    assert code == 0, err
    return root / "run", out


@pytest.fixture(scope="module")
def diabetes():
    return ek.load_dataset("diabetes")


def _row(run):
    return json.loads((run / "results.json").read_text())


# ----------------------------------------------------------------- train

def test_train_prints_and_records_the_gaussian_metrics_of_the_saved_ensemble(reg_run, diabetes):
    run, out = reg_run
    row = _row(run)
    assert row["data"]["task"] == "regression" and row["evaluation"]["task"] == "regression"
    pred = load_predictor(str(run / "ensemble.safetensors"))
    expect = evaluate_gaussian(ek.predictive(pred, diabetes.test), diabetes.test.tensors()[1])
    t = row["test"]
    for k in ("rmse", "mae", "nll", "crps"):
        assert t[k] == pytest.approx(expect[k], rel=1e-6), k
    assert t["picp"]["0.95"] == pytest.approx(expect["picp"]["0.95"])
    assert t["member_mean"]["rmse"] == pytest.approx(expect["member_mean"]["rmse"], rel=1e-6)
    # the result table: regression columns, the numbers of results.json
    header = next(line for line in out.splitlines() if "RMSE" in line)
    assert re.search(r"RMSE\s*\S\s*NLL\s*\S\s*CRPS\s*\S\s*PICP95 %\s*\S\s*MPIW95", header), header
    assert "Brier" not in out and "ECE" not in out and "error %" not in out
    ens_line = next(line for line in out.splitlines() if "ensemble" in line and f"{t['rmse']:.4g}" in line)
    assert f"{t['nll']:.4f}" in ens_line and f"{t['crps']:.4g}" in ens_line and f"{100 * t['picp']['0.95']:.1f}" in ens_line
    mm = next(line for line in out.splitlines() if "mean member" in line)
    assert f"{t['member_mean']['rmse']:.4g}" in mm and f"{t['member_mean']['nll']:.4f}" in mm
    assert f"x{t['calibrated']['variance_scale']:.3g}" in out  # the variance-scaled row
    assert "variance scaling on the test split" in out and "selective regression" in out  # the run's own evaluation


def test_resume_of_a_finished_regression_run_reprints_the_same_result(reg_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(reg_run[0], run)
    before = _row(run)["test"]
    code, out, err = _main("train", "--resume", run)
    assert code == 0, err
    after = _row(run)["test"]
    assert after["rmse"] == pytest.approx(before["rmse"], rel=1e-9) and after["nll"] == pytest.approx(before["nll"], rel=1e-9)
    assert "RMSE" in out and f"{after['rmse']:.4g}" in out


# ----------------------------------------------------------------- evaluate

def test_evaluate_prints_the_regression_table(reg_run):
    run = reg_run[0]
    code, out, err = _main("evaluate", run)
    assert code == 0, err
    t = _row(run)["test"]
    assert "RMSE" in out and "CRPS" in out and "Brier" not in out
    line = next(line for line in out.splitlines() if "ensemble" in line and "member(s)" not in line)
    assert f"{t['rmse']:.4g}" in line and f"{t['nll']:.4f}" in line
    assert "diversity: aleatoric=" in out and "epistemic_share=" in out
    assert not (run / "evaluation").exists()  # nothing beyond the basic metrics was asked


def test_evaluate_with_calibration_conformal_shift_and_ood_on_a_regression_run(reg_run, tmp_path):
    run = reg_run[0]
    code, out, err = _main("evaluate", run, "--calibrate", "--conformal", "0.1", "--shift", "--ood", "noise", "--out", tmp_path / "ev")
    assert code == 0, err
    for title in ("variance scaling on the test split", "selective regression", "OOD detection: 44 test vs 44 noise",
                  "shift: mean over 3 corruptions", "conformal intervals, alpha = 0.1"):
        assert title in out, title
    assert "THR" not in out and "accuracy %" not in out
    unc = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    assert unc["task"] == "regression" and unc["config"]["conformal"]["alpha"] == 0.1
    assert set(unc) >= {"calibration", "selective", "ood", "shift", "conformal"}
    # the same fit as the run's own evaluation (same ensemble, same validation split)
    own = _row(run)["evaluation"]["calibration"]["variance_scaled"]["scale"]
    assert unc["calibration"]["variance_scaled"]["scale"] == pytest.approx(own, rel=1e-6)
    assert f"c = {own:.3g}" in out
    n = unc["conformal"]["normalized"]
    assert f"{100 * n['coverage']:.1f}" in next(line for line in out.splitlines() if "normalized conformal" in line)
    sev1 = next(line for line in out.splitlines() if re.match(r"\W*1\W", line))
    assert f"{unc['shift']['by_severity']['rmse'][0]:.4g}" in sev1
    assert (tmp_path / "ev" / "calibration.png").is_file() and (tmp_path / "ev" / "ood_scores.png").is_file()


def test_the_flags_build_a_block_without_classification_scores_for_a_regression_run(reg_run):
    from ensemblekit.cli.uncertainty import evaluation_from_flags, run_task

    run = str(reg_run[0])
    assert run_task(run) == "regression"
    block = evaluation_from_flags(run, None, False, [], True, 0.1, False)
    assert block["conformal"] == {"alpha": 0.1} and block["calibration"] == "temperature"


@pytest.mark.parametrize("args, expect", [
    (["--ood", "held_out"], r"--ood held_out: .* is a regression run, and regression data has no classes"),
    (["--data", "digits"], r"is a regression run, and 'digits' is classification data"),
    (["--ood", "extrapolation"], r"extrapolation: no test example lies outside the training range"),
])
def test_evaluate_refuses_what_does_not_apply_to_a_regression_run(reg_run, tmp_path, args, expect):
    code, out, err = _main("evaluate", reg_run[0], *args, "--out", tmp_path / "ev")
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:"), err
    assert re.search(expect, lines[0]), lines[0]
    assert not (tmp_path / "ev").exists()


# ----------------------------------------------------------------- predict, export

def _library(run, x):
    return regression_outputs(ek.predictive(load_predictor(str(run / "ensemble.safetensors")), torch.as_tensor(x)))


def test_predict_writes_the_library_s_mean_std_and_intervals(reg_run, diabetes, tmp_path):
    run = reg_run[0]
    x = diabetes.test.tensors()[0][:20].numpy()
    np.savetxt(tmp_path / "x.csv", x, delimiter=",")
    code, out, err = _main("predict", run, "--data", tmp_path / "x.csv", "--out", tmp_path / "p.csv")
    assert code == 0, err
    assert "20 example(s), 1 target(s), 3 member(s)" in out
    table = np.genfromtxt(tmp_path / "p.csv", delimiter=",", names=True)
    expect = _library(run, x)
    for col in ("mean", "std", "aleatoric_std", "epistemic_std", "lower_95", "upper_95"):
        np.testing.assert_allclose(table[col], expect[col], rtol=1e-5, atol=1e-3, err_msg=col)  # the CSV keeps 6 digits
    assert np.all(table["lower_95"] < table["mean"]) and np.all(table["mean"] < table["upper_95"])
    np.savez(tmp_path / "x.npz", x=x)
    code, _, err = _main("predict", run, "--data", tmp_path / "x.npz", "--out", tmp_path / "p.npz", "--members")
    assert code == 0, err
    with np.load(tmp_path / "p.npz") as f:
        for col in ("mean", "std", "aleatoric_std", "epistemic_std", "lower_95", "upper_95"):
            np.testing.assert_allclose(f[col].reshape(-1), expect[col].reshape(-1), rtol=1e-6, err_msg=col)
        assert f["member_mean"].shape == (3, 20)


def test_export_writes_a_graph_returning_the_pooled_mean_and_variance(reg_run, diabetes, tmp_path):
    run = reg_run[0]
    code, out, err = _main("export", run, "--out", tmp_path / "g.pt2")
    assert code == 0, err
    module = torch.export.load(str(tmp_path / "g.pt2")).module()
    x = diabetes.test.tensors()[0][:9]
    with torch.no_grad():
        mean, var = module(x)
    pm, pv = ek.predictive(load_predictor(str(run / "ensemble.safetensors")), x).pooled()
    torch.testing.assert_close(mean.double(), pm.double(), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(var.double(), pv.double(), rtol=1e-5, atol=1e-3)


def test_a_user_factory_regression_run_predicts_the_same_with_factory_as_trusted(tmp_path, monkeypatch):
    """--factory rebuilds the members with the mean-variance head the file records (its ``gaussian`` wrapper)."""
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / "regnet_cli.py").write_text(
        "import torch.nn as nn\n"
        "def make(input_shape, num_classes, width=8):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(input_shape[0], width), nn.ReLU(), nn.Linear(width, num_classes))\n")
    monkeypatch.setattr(sys, "path", [str(tmp_path / "mods"), *sys.path])
    cfg = {**RUN, "model": {"factory": "regnet_cli:make", "kwargs": {"width": 12}}, "method": {"name": "independent", "members": 2},
           "train": {**TRAIN, "epochs": 1}}
    (tmp_path / "f.yaml").write_text(yaml.safe_dump(cfg))
    assert _main("train", tmp_path / "f.yaml", "--run-dir", tmp_path / "run")[0] == 0
    x = ek.load_dataset("diabetes").test.tensors()[0][:5].numpy()
    np.savez(tmp_path / "x.npz", x=x)
    outs = {}
    for flag in (["--factory", "regnet_cli:make"], ["--trust-factory"]):
        code, _, err = _main("predict", tmp_path / "run", "--data", tmp_path / "x.npz", "--out", tmp_path / f"{flag[0][2:]}.npz", *flag)
        assert code == 0, err
        with np.load(tmp_path / f"{flag[0][2:]}.npz") as f:
            outs[flag[0]] = {k: f[k] for k in f.files}
    for k, v in outs["--trust-factory"].items():
        np.testing.assert_allclose(outs["--factory"][k], v, rtol=1e-6, err_msg=k)
    code, out, err = _main("evaluate", tmp_path / "run", "--factory", "regnet_cli:make")
    assert code == 0 and f"{_row(tmp_path / 'run')['test']['rmse']:.4g}" in out, err


# ----------------------------------------------------------------- bad inputs

_RNG = np.random.default_rng(0)
X = _RNG.normal(size=(60, 4)).astype("float32")
Y = (X @ np.ones(4)).astype("float32")


def _npz(y, **options):
    def build(tmp):
        np.savez(tmp / "d.npz", x=X, y=y)
        return {**RUN, "data": {"npz": str(tmp / "d.npz"), **options}}
    return build


def _patched(**patch):
    return lambda tmp: {**RUN, **patch}


BAD = {
    "nan-targets": (_npz(np.where(np.arange(60) == 3, np.nan, Y).astype("float32"), task="regression"),
                    r"y: 1 regression target value\(s\) are NaN or infinite"),
    "nan-targets-inferred": (_npz(np.where(np.arange(60) == 3, np.nan, Y).astype("float32")), r"y: 1 target value\(s\) are NaN or infinite"),
    "targets-of-rank-3": (_npz(_RNG.normal(size=(60, 2, 3)).astype("float32"), task="regression"),
                          r"regression targets must have shape \(N,\) or \(N, D\).*got \(60, 2, 3\)"),
    "float-labels-stated-classification": (_npz(Y, task="classification"), r"y must hold integer class indices, got non-integer values"),
    "classification-method-on-regression-data": (_patched(method={"name": "boosting", "members": 2}),
                                                 r"boosting trains on classification data, and this data is regression"),
    "cross-entropy-on-regression-data": (_patched(train={**TRAIN, "loss": "cross_entropy"}),
                                         r"train\.loss: cross_entropy is a classification loss, and 'diabetes' is regression data"),
    "val-acc-early-stopping-on-regression-data": (_patched(train={**TRAIN, "early_stopping": {"metric": "val_acc"}}),
                                                  r"early_stopping\.metric: val_acc is a classification metric"),
}


def _snapshot(folder):
    return sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*"))


@pytest.mark.parametrize("case", list(BAD))
def test_bad_regression_input_exits_2_in_one_line_and_writes_nothing(case, tmp_path):
    build, expect = BAD[case]
    cfg = {**build(tmp_path), "out": str(tmp_path / "out")}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    before = _snapshot(tmp_path)
    code, out, err = _main("train", tmp_path / "c.yaml")
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2, err
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("error:"), err
    assert re.search(expect, lines[0]), f"{lines[0]!r} does not name {expect!r}"
    assert not (tmp_path / "out").exists()
    assert _snapshot(tmp_path) == before
