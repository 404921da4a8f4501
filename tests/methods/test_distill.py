"""distill: a student that beats its label-only twin, an EnD² student's uncertainty, the teacher
reused on resume, a teacher read from a run, and the bad inputs refused before anything is written."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
import torch
import yaml

import ensemblekit as ek
from ensemblekit.data.batching import Batch
from ensemblekit.distill import PriorNetwork, StreamedTeacher, distill_loss_fn, kd_loss
from ensemblekit.methods.distill import Distill
from ensemblekit.predictors import load_predictor
from ensemblekit.training import Callback
from ensemblekit.training.config import TrainConfig

TRAIN = dict(model={"name": "mlp", "kwargs": {"hidden": [64, 64]}}, epochs=60, batch_size=32, optimizer={"name": "adam", "lr": 0.003},
             progress=False)
TEACHER = {"name": "independent", "members": 5}


@pytest.fixture(scope="module")
def overlap():
    """Six overlapping classes in 10-D, 300 training examples: a network trained 60 epochs on the labels overfits."""
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 1.0, size=(6, 10))
    y = rng.integers(0, 6, 1300)
    x = centers[y] + rng.normal(0, 1.0, size=(1300, 10))
    return ek.from_arrays(x[:300], y[:300], x[300:], y[300:], val_fraction=0.0, seed=0, name="overlap")


def _nll(method, data):
    p = method.predict_proba(data.test.x).mean(0)
    return float(-torch.log(p[torch.arange(len(p)), data.test.y]).mean())


def test_a_distilled_student_beats_the_same_network_trained_on_labels(overlap):
    single = ek.create_method("independent", members=1, **TRAIN).fit(overlap)
    student = ek.create_method("distill", teacher=TEACHER, **TRAIN).fit(overlap)
    assert student.ensemble_.num_members == 1 and student.ensemble_.num_parameters() == single.ensemble_.num_parameters()
    assert _nll(student, overlap) < _nll(single, overlap) - 0.05  # measured: 0.64 against 0.74
    # the row's cost is the teacher's, its predictions' and the student's; inference is the student's alone
    assert set(student.cost_) - {"fit_s"} == {"teacher", "teacher_predictions", "student"}
    assert student.flops_["teacher"] == pytest.approx(5 * student.flops_["student"], rel=1e-6)


def test_an_end2_student_is_more_uncertain_on_noise_than_on_test_inputs(overlap, tmp_path):
    student = ek.create_method("distill", teacher=TEACHER, loss="end2", aux={"noise": 2.0}, **TRAIN).fit(overlap)
    assert isinstance(student.ensemble_, PriorNetwork)
    x = overlap.train.x
    noise = (x.min(0).values + (x.max(0).values - x.min(0).values) * torch.rand(500, 10, generator=torch.Generator().manual_seed(0)))
    mi_noise = student.predictive(noise).scores(["mi"])["mi"].mean()
    mi_test = student.predictive(overlap.test.x).scores(["mi"])["mi"].mean()
    assert mi_noise > 1.5 * mi_test > 0  # measured: 0.19 against 0.085
    path = str(tmp_path / "student.safetensors")
    student.ensemble_.save(path)
    loaded = load_predictor(path)
    assert isinstance(loaded, PriorNetwork)
    torch.testing.assert_close(ek.evaluation.forward.predictive(loaded, noise).scores(["mi"])["mi"].mean(), mi_noise)


class Kill(Callback):
    def __init__(self, at: int | None = None) -> None:
        self.at, self.steps = at, 0

    def on_step_end(self, trainer, step, batch):
        self.steps += 1
        if self.steps == self.at:
            raise KeyboardInterrupt


def test_a_killed_distillation_resumes_with_its_teacher_untrained(blobs, tmp_path):
    small = dict(model={"name": "mlp", "kwargs": {"hidden": [16]}}, epochs=4, batch_size=32, progress=False)
    run = str(tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        ek.create_method("distill", teacher={"name": "independent", "members": 2}, **small).fit(blobs, run_dir=run, callbacks=[Kill(12)])
    teachers = os.path.join(run, "cache", "teachers")
    (key,) = os.listdir(teachers)
    record = os.path.join(teachers, key, "teacher.json")
    files = {f: os.stat(os.path.join(teachers, key, f)).st_mtime_ns for f in os.listdir(os.path.join(teachers, key)) if os.path.isfile(os.path.join(teachers, key, f))}
    count = Kill()
    resumed = ek.create_method("distill", teacher={"name": "independent", "members": 2}, **small).fit(blobs, run_dir=run, callbacks=[count])
    assert resumed.details(blobs)["teacher_reused"] is True
    assert {f: os.stat(os.path.join(teachers, key, f)).st_mtime_ns for f in files} == files  # nothing of the teacher rewritten
    assert resumed.cost_["teacher"] == pytest.approx(json.load(open(record))["seconds"])
    steps = 4 * -(-len(blobs.train) // 32)
    assert 0 < count.steps < steps  # the student went on from its checkpoint
    whole = ek.create_method("distill", teacher={"name": "independent", "members": 2}, **small).fit(blobs, run_dir=str(tmp_path / "whole"))
    torch.testing.assert_close(resumed.predict_proba(blobs.test.x), whole.predict_proba(blobs.test.x), rtol=0, atol=0)


def test_hydra_gives_each_teacher_member_a_head(blobs):
    small = dict(model={"name": "mlp", "kwargs": {"hidden": [16]}}, epochs=3, batch_size=32, progress=False)
    hydra = ek.create_method("distill", teacher={"name": "independent", "members": 3}, loss="hydra", **small).fit(blobs)
    assert hydra.ensemble_.num_members == 3
    probs = hydra.predict_proba(blobs.test.x)
    assert float((probs - probs.mean(0)).abs().max()) > 1e-3  # the heads differ: their spread is the MI
    single = ek.create_method("independent", members=1, **small).fit(blobs)
    head = 16 * blobs.num_classes + blobs.num_classes
    assert hydra.ensemble_.num_parameters() == single.ensemble_.num_parameters() + 2 * head


def test_the_loss_reads_the_teacher_on_the_inputs_the_student_saw(blobs):
    """Streamed: the teacher runs on batch.x (augmented, mixed); the engine hands the loss those inputs."""
    teacher = ek.create_method("independent", members=2, model={"name": "mlp", "kwargs": {"hidden": [8]}}, epochs=1, progress=False).fit(blobs)
    stream = StreamedTeacher(teacher.ensemble_, 1)
    x = torch.randn(6, 8)
    out = torch.randn(1, 6, 3)
    loss = distill_loss_fn("kd", None, temperature=2.0, stream=stream)(out, Batch(x, torch.zeros(6, dtype=torch.long), None))
    torch.testing.assert_close(loss, kd_loss(out, torch.softmax(teacher.ensemble_.logits(x), -1).mean(0), 2.0))
    seen = []

    def record(out, batch):
        seen.append(batch.x.clone())
        return out.new_zeros(out.shape[0]) + out.sum() * 0

    from ensemblekit.ensemble import Ensemble
    from ensemblekit.models.registry import model_factory
    from ensemblekit.training.engine import Trainer

    model = Ensemble.from_factory(model_factory({"name": "mlp", "kwargs": {"hidden": [8]}}, input_shape=(8,), num_classes=3), members=1)
    Trainer(model, blobs, TrainConfig(epochs=1, batch_size=240, mixup=0.4, data_order="shared", progress=False), loss_fn=record).fit()
    rows = {tuple(r.tolist()) for r in blobs.train.x}
    same = sum(tuple(r.tolist()) in rows for s in seen for r in s)  # a row mixed with itself stays one
    assert seen and same < 0.05 * sum(len(s) for s in seen)  # mixed inputs, not the split's rows


def test_budgets_split_between_teacher_and_student():
    train = TrainConfig(epochs=10)
    assert Distill.at_budget(1, train, {"teacher": TEACHER}) is None
    six = Distill.at_budget(6, train, {"teacher": TEACHER})
    assert six == {"teacher": {"name": "independent", "members": 5}, "student_budget": 1}
    fge = Distill.at_budget(6, train, {"teacher": {"name": "fge"}})
    assert fge["teacher"]["name"] == "fge" and fge["student_budget"] == 1
    assert Distill.at_budget(3, train, {"teacher": "runs/some-run"}) == {"student_budget": 3}


# ----------------------------------------------------------------- teachers from runs, and bad inputs
RUN = {"data": "digits", "model": {"name": "mlp", "kwargs": {"hidden": [8]}}, "method": {"name": "independent", "members": 2},
       "train": {"epochs": 1, "batch_size": 64, "optimizer": {"name": "adam", "lr": 0.01}, "progress": False}}


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    from ensemblekit.cli import main

    root = tmp_path_factory.mktemp("teacher")
    (root / "c.yaml").write_text(yaml.safe_dump(RUN))
    with pytest.raises(SystemExit) as exc:
        main(["train", str(root / "c.yaml"), "--run-dir", str(root / "run")])
    assert exc.value.code in (0, None)
    return root / "run"


def _distill_config(tmp_path, **method):
    cfg = {**RUN, "method": {"name": "distill", **method}, "out": str(tmp_path / "out")}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_a_teacher_run_is_distilled_with_its_recorded_cost(digits_run, tmp_path, cli):
    path = _distill_config(tmp_path, teacher=str(digits_run))
    assert cli("train", str(path), "--run-dir", str(tmp_path / "student")) in (0, None)
    row = json.load(open(tmp_path / "student" / "results.json"))
    teacher_row = json.load(open(digits_run / "results.json"))
    assert row["cost"]["stages_s"]["teacher"] == pytest.approx(teacher_row["wall_s"])
    assert row["cost"]["train_flops"] > teacher_row["cost"]["train_flops"]


def _one_line(capsys, code, expect):
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2 and "Traceback" not in err and len(lines) == 1 and lines[0].startswith("error:"), err
    assert re.search(expect, lines[0]), lines[0]


@pytest.mark.parametrize("case, method, expect", [
    ("missing-run", {"teacher": "/nonexistent/teacher-run"}, "is not a finished run"),
    ("temperature-0", {"temperature": 0}, "temperature"),
    ("student-width", {"student": {"name": "mlp", "kwargs": {"hidden": [8], "num_classes": 3}}}, r"outputs .* expected \(2, 10\)"),
    ("end2-regression", None, "end2"),
])
def test_bad_distillation_inputs_fail_first(case, method, expect, tmp_path, capsys, monkeypatch, cli):
    monkeypatch.setenv("COLUMNS", "2000")
    if case == "end2-regression":
        cfg = {**RUN, "data": {"name": "toy_cubic"}, "method": {"name": "distill", "loss": "end2"}, "out": str(tmp_path / "out")}
        (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
        path = tmp_path / "c.yaml"
    else:
        path = _distill_config(tmp_path, **method)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    _one_line(capsys, cli("train", str(path)), expect)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_a_teacher_run_of_other_data_or_another_task_is_refused(digits_run, tmp_path, capsys, monkeypatch, cli):
    monkeypatch.setenv("COLUMNS", "2000")
    other = {**RUN, "data": {"name": "digits", "seed": 1}, "method": {"name": "distill", "teacher": str(digits_run)}, "out": str(tmp_path / "out")}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(other))
    _one_line(capsys, cli("train", str(tmp_path / "c.yaml")), "trained on other data")
    task = {**RUN, "data": {"name": "toy_cubic"}, "method": {"name": "distill", "teacher": str(digits_run)}, "out": str(tmp_path / "out")}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(task))
    _one_line(capsys, cli("train", str(tmp_path / "c.yaml")), "trained for classification")
    assert not (tmp_path / "out").exists()
