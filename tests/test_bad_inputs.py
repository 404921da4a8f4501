"""Every bad input fails cleanly and first: one line naming what is wrong, exit code 2, no traceback,
and nothing written (no half-made run directory that would block the corrected run).

Each case builds its inputs in a temporary folder, runs the command in-process and checks the
output folder it names is untouched."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from safetensors.torch import save_file

RUN = {"data": "digits", "model": {"name": "mlp", "kwargs": {"hidden": [8]}}, "method": {"name": "independent", "members": 2},
       "train": {"epochs": 1, "batch_size": 64, "optimizer": {"name": "adam", "lr": 0.01}, "progress": False}}
CMP = {"data": "digits", "model": {"name": "mlp", "kwargs": {"hidden": [8]}}, "train": RUN["train"], "budgets": [1], "seeds": [0],
       "methods": ["independent"]}


def _merge(base, patch):
    out = dict(base)
    for k, v in patch.items():
        out[k] = _merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


def train_with(patch=None, text=None):
    def build(tmp):
        path = tmp / "c.yaml"
        if text is not None:
            path.write_text(text)
        else:
            path.write_text(yaml.safe_dump({**_merge(RUN, patch or {}), "out": str(tmp / "out")}))
        return ["train", str(path)]
    return build


def compare_with(patch):
    def build(tmp):
        path = tmp / "c.yaml"
        path.write_text(yaml.safe_dump({**_merge(CMP, patch), "out": str(tmp / "out")}))
        return ["compare", str(path)]
    return build


def npz_with(**arrays):
    def build(tmp):
        np.savez(tmp / "d.npz", **arrays)
        return train_with({"data": {"npz": str(tmp / "d.npz")}})(tmp)
    return build


def factory_module(source, path="badnet:make"):
    def build(tmp):
        (tmp / "badnet.py").write_text(source)
        import sys

        sys.path.insert(0, str(tmp))
        sys.modules.pop("badnet", None)
        return train_with({"model": {"factory": path, "kwargs": {}}})(tmp)
    return build


def raw(*args):
    return lambda tmp: [a.replace("TMP", str(tmp)) for a in args]


def run_dir_with(files):
    """A folder that looks like a run directory, with the given files written into it."""
    def build(tmp):
        run = tmp / "run"
        run.mkdir()
        (run / "config.yaml").write_text(yaml.safe_dump(RUN))
        for name, writer in files.items():
            writer(run / name)
        return None
    return build


def _st(tensors, meta):
    import json

    def write(path):
        save_file(tensors, str(path), metadata={"json": json.dumps(meta)} if meta is not None else None)
    return write


X = np.random.default_rng(0).normal(size=(40, 4)).astype("float32")
Y = np.arange(40) % 2

CASES = {
    # --- train configs: types, ranges, names
    "epochs-0": train_with({"train": {"epochs": 0}}),
    "epochs-typo": train_with({"train": {"epoch": 3}}),
    "epochs-string": train_with({"train": {"epochs": "many"}}),
    "batch-size-0": train_with({"train": {"batch_size": 0}}),
    "lr-negative": train_with({"train": {"optimizer": {"name": "adam", "lr": -1}}}),
    "optimizer-unknown": train_with({"train": {"optimizer": {"name": "adamax2"}}}),
    "optimizer-unknown-arg": train_with({"train": {"optimizer": {"name": "adam", "momentum": 0.9}}}),
    "sgd-negative-momentum": train_with({"train": {"optimizer": {"name": "sgd", "lr": 0.1, "momentum": -0.5}}}),
    "adam-betas-out-of-range": train_with({"train": {"optimizer": {"name": "adam", "betas": [1.5, 0.9]}}}),
    "weight-decay-string": train_with({"train": {"optimizer": {"name": "adam", "weight_decay": "lots"}}}),
    "per-member-wrong-length": train_with({"train": {"optimizer": {"name": "sgd", "lr": 0.1, "per_member": {"lr": [0.1]}}}}),
    "schedule-unknown": train_with({"train": {"schedule": "cosin"}}),
    "schedule-unknown-option": train_with({"train": {"schedule": {"name": "cosine", "gamma": 0.1}}}),
    "milestones-string": train_with({"train": {"schedule": {"name": "step", "milestones": "x"}}}),
    "gamma-string": train_with({"train": {"schedule": {"name": "step", "milestones": [1], "gamma": "big"}}}),
    "warmup-too-long": train_with({"train": {"schedule": {"name": "cosine", "warmup": 5}}}),
    "grad-clip-negative": train_with({"train": {"grad_clip": -1}}),
    "data-order-unknown": train_with({"train": {"data_order": "random"}}),
    "device-unknown": train_with({"train": {"device": "tpu"}}),
    "precision-unknown": train_with({"train": {"precision": "fp8"}}),
    "member-chunk-0": train_with({"train": {"member_chunk": 0}}),
    "member-chunk-string": train_with({"train": {"member_chunk": "half"}}),
    "devices-empty": train_with({"train": {"devices": []}}),
    "devices-unknown": train_with({"train": {"devices": ["cpu", "tpu:0"]}}),
    "devices-cuda-absent": train_with({"train": {"devices": ["cuda:0", "cuda:1"]}}),
    "member-chunk-shared-network": train_with({"method": {"name": "batch_ensemble", "members": 2}, "train": {"member_chunk": 1}}),
    "augment-unknown": train_with({"train": {"augment": ["rotate"]}}),
    "augment-wrong-rank": train_with({"data": "mnist1d", "model": {"name": "cnn1d"}, "train": {"augment": ["hflip"]}}),
    "tta-unknown": train_with({"train": {"tta": ["crop"]}}),
    "mixup-negative": train_with({"train": {"mixup": -1}}),
    "early-stopping-patience-0": train_with({"train": {"early_stopping": {"patience": 0}}}),
    "penalty-negative": train_with({"train": {"penalties": {"l2": -1}}}),
    "unknown-top-level-key": train_with({"trainer": {}}),
    "method-unknown": train_with({"method": "boost"}),
    "members-negative": train_with({"method": {"name": "independent", "members": -1}}),
    "method-param-unknown": train_with({"method": {"name": "independent", "cycles": 3}}),
    "snapshot-cycles-beyond-iterations": train_with({"method": {"name": "snapshot", "cycles": 100000}}),
    "snapshot-cycle-longer-than-run": train_with({"method": {"name": "snapshot", "cycle_epochs": 5}}),
    "fge-a1-below-a2": train_with({"method": {"name": "fge", "a1": 0.001, "a2": 0.01}}),
    "fge-no-cycle-middle": train_with({"method": {"name": "fge", "cycle_epochs": 3}}),
    "curve-below-3-bends": train_with({"method": {"name": "curve_ensemble", "num_bends": 2}}),
    "varhyper-batchnorm": train_with({"model": {"name": "mlp", "kwargs": {"hidden": [8], "batchnorm": True}}, "method": "varhyper"}),
    "varhyper-lambda-outside": train_with({"method": {"name": "varhyper", "lambdas": [1000.0]}}),
    "edgenes-members-above-pool": train_with({"method": {"name": "edgenes", "pool": 2, "members": 3}}),
    "edgenes-search-typo": train_with({"method": {"name": "edgenes", "search": {"step": 3}}}),
    # --- models
    "model-unknown": train_with({"model": "cnn3d"}),
    "model-kwarg-unknown": train_with({"model": {"name": "mlp", "kwargs": {"width": 3}}}),
    "model-kwarg-wrong-type": train_with({"model": {"name": "mlp", "kwargs": {"hidden": "wide"}}}),
    "model-kwarg-negative": train_with({"model": {"name": "mlp", "kwargs": {"hidden": [-3]}}}),
    "model-dropout-2": train_with({"model": {"name": "mlp", "kwargs": {"hidden": [8], "dropout": 2}}}),
    "model-wrong-for-data": train_with({"model": "cnn1d"}),
    "wrapper-unknown": train_with({"model": {"name": "mlp", "frozen": 2}}),
    "frozen-head-negative": train_with({"model": {"name": "mlp", "frozen_head": -1}}),
    "dropconnect-1.5": train_with({"model": {"name": "mlp", "dropconnect": 1.5}}),
    "factory-relative-path": train_with({"model": {"factory": "./net.py:make"}}),
    "factory-no-module": train_with({"model": {"factory": "nopkg_xyz.mod:make"}}),
    "factory-no-attribute": train_with({"model": {"factory": "os:no_such_function"}}),
    "factory-raises": factory_module("def make():\n    raise RuntimeError('my factory is broken')\n"),
    "factory-syntax-error": factory_module("def make(:\n    pass\n"),
    "factory-import-error": factory_module("import no_such_module_xyz\ndef make():\n    pass\n"),
    "factory-returns-not-a-module": factory_module("def make():\n    return 3\n"),
    # --- datasets
    "dataset-unknown": train_with({"data": "mnist2d"}),
    "dataset-option-unknown": train_with({"data": {"name": "digits", "samples": 10}}),
    "num-samples-string": train_with({"data": {"name": "mnist1d", "num_samples": "lots"}, "model": {"name": "cnn1d"}}),
    "val-fraction-string": train_with({"data": {"name": "digits", "val_fraction": "lots"}}),
    "val-fraction-1.5": train_with({"data": {"name": "digits", "val_fraction": 1.5}}),
    # --- YAML files
    "yaml-empty": train_with(text=""),
    "yaml-a-list": train_with(text="- 1\n- 2\n"),
    "yaml-syntax": train_with(text="data: [digits\n"),
    "yaml-non-string-keys": train_with(text="1: 2\ndata: digits\n"),
    "yaml-non-string-nested-key": train_with(text="data: digits\ntrain: {3: 4}\n"),
    "config-file-missing": raw("train", "TMP/none.yaml"),
    # --- data files
    "npz-not-a-zip": lambda tmp: ((tmp / "d.npz").write_text("not a zip"), train_with({"data": {"npz": str(tmp / "d.npz")}})(tmp))[1],
    "npz-missing-y": npz_with(x=X),
    "npz-string-features": npz_with(x=np.array([["a", "b"]] * 40), y=Y),
    "npz-nan-features": npz_with(x=np.where(np.arange(160).reshape(40, 4) == 7, np.nan, X), y=Y),
    "npz-lengths-differ": npz_with(x=X, y=Y[:30]),
    "npz-negative-label": npz_with(x=X, y=np.where(Y == 1, -1, 0)),
    "npz-huge-label": npz_with(x=X, y=np.where(Y == 1, 10**12, 0)),
    "npz-float-labels": npz_with(x=X, y=Y + 0.5),
    "npz-empty": npz_with(x=X[:0], y=Y[:0]),
    "npz-unknown-array": npz_with(x=X, y=Y, z=Y),
    "npz-missing-file": train_with({"data": {"npz": "/nonexistent/d.npz"}}),
    # --- compare configs
    "compare-method-train-typo": compare_with({"methods": [{"name": "independent", "train": {"epoch": 3}}]}),
    "compare-method-train-bad-value": compare_with({"methods": [{"name": "independent", "train": {"optimizer": {"name": "sgd", "momentum": -1}}}]}),
    "compare-budget-0": compare_with({"budgets": [0]}),
    "compare-duplicate-labels": compare_with({"methods": ["independent", "independent"]}),
    "compare-method-param-unknown": compare_with({"methods": [{"name": "fge", "cycles": 3}]}),
    "compare-method-model-unknown": compare_with({"methods": [{"name": "independent", "model": "cnn9"}]}),
    "compare-model-kwarg-wrong-type": compare_with({"model": {"name": "mlp", "kwargs": {"hidden": "wide"}}}),
    # --- evaluation blocks
    "evaluation-unknown-corruption": train_with({"evaluation": {"shift": {"corruptions": ["fog"]}}}),
    "evaluation-severity-6": train_with({"evaluation": {"shift": {"severities": [1, 6]}}}),
    "evaluation-signal-corruption-on-images": train_with({"evaluation": {"shift": {"corruptions": ["time_shift"]}}}),
    "evaluation-mnist1d-generator-on-digits": train_with({"evaluation": {"shift": {"corruptions": ["mnist1d_generator"]}}}),
    "evaluation-held-out-class-10": train_with({"evaluation": {"ood": [{"held_out_classes": [7, 10]}]}}),
    "evaluation-held-out-all-but-one": train_with({"evaluation": {"ood": [{"held_out_classes": list(range(1, 10))}]}}),
    "evaluation-two-held-out-sets": train_with({"evaluation": {"ood": [{"held_out_classes": [7]}, {"held_out_classes": [8]}]}}),
    "evaluation-unknown-ood-set": train_with({"evaluation": {"ood": ["gaussian"]}}),
    "evaluation-ood-npz-missing": train_with({"evaluation": {"ood": [{"npz": "/nonexistent/ood.npz"}]}}),
    "evaluation-ood-npz-wrong-shape": lambda tmp: (np.savez(tmp / "o.npz", x=np.zeros((5, 40))),
                                                   train_with({"evaluation": {"ood": [{"npz": str(tmp / "o.npz")}]}})(tmp))[1],
    "evaluation-unknown-score": train_with({"evaluation": {"scores": ["msp", "odin"]}}),
    "evaluation-conformal-alpha-1": train_with({"evaluation": {"conformal": {"alpha": 1.0}}}),
    "evaluation-conformal-unknown-score": train_with({"evaluation": {"conformal": {"scores": ["naive"]}}}),
    "evaluation-calibration-without-val": train_with({"data": {"name": "digits", "val_fraction": 0}, "evaluation": {"calibration": "temperature"}}),
    "evaluation-conformal-without-val": train_with({"data": {"name": "digits", "val_fraction": 0}, "evaluation": {"conformal": True}}),
    "evaluation-typo": train_with({"evaluation": {"shfit": True}}),
    "compare-evaluation-bad-corruption": compare_with({"evaluation": {"shift": {"corruptions": ["rotation", "swirl"]}}}),
    "compare-evaluation-held-out-class-10": compare_with({"evaluation": {"ood": [{"held_out_classes": [10]}]}}),
    # --- command lines
    "set-without-equals": lambda tmp: [*train_with()(tmp), "--set", "train.epochs"],
    "set-through-a-number": lambda tmp: [*train_with()(tmp), "--set", "train.epochs.x=3"],
    "set-bad-value": lambda tmp: [*train_with()(tmp), "--set", "train.epochs=-2"],
    "resume-not-a-run": raw("train", "--resume", "TMP/nothing"),
    "evaluate-not-a-run": raw("evaluate", "TMP/nothing"),
    "threads-0": lambda tmp: ["--threads", "0", *train_with()(tmp)],
    "backend-unknown": lambda tmp: [*compare_with({})(tmp), "--backend", "spark"],
}

RUN_DIR_CASES = {
    "ensemble-lacks-tensors": ({"ensemble.safetensors": _st({"x": __import__("torch").zeros(1)}, {
        "format": "ensemblekit.ensemble/1", "members": [{}],
        "groups": [{"spec": {"name": "mlp", "kwargs": {"input_shape": [1, 8, 8], "num_classes": 10, "hidden": [8]}}, "frozen": [], "members": 1}]})},
        ["evaluate", "RUN"]),
    "ensemble-malformed-metadata": ({"ensemble.safetensors": lambda p: save_file({"x": __import__("torch").zeros(1)}, str(p), metadata={"json": "{not json"})},
                                    ["evaluate", "RUN"]),
    "ensemble-not-safetensors": ({"ensemble.safetensors": lambda p: p.write_text("garbage")}, ["evaluate", "RUN"]),
    "evaluate-unknown-data": ({"ensemble.safetensors": lambda p: p.write_text("x")}, ["evaluate", "RUN", "--data", "mnist9"]),
    "evaluate-unknown-split": ({"ensemble.safetensors": lambda p: p.write_text("x")}, ["evaluate", "RUN", "--split", "holdout"]),
    "evaluate-ood-held-out-without-classes": ({"ensemble.safetensors": lambda p: p.write_text("x")}, ["evaluate", "RUN", "--ood", "held_out"]),
    "evaluate-ood-unknown": ({"ensemble.safetensors": lambda p: p.write_text("x")}, ["evaluate", "RUN", "--ood", "gauss"]),
    "evaluate-conformal-alpha-2": ({"ensemble.safetensors": lambda p: p.write_text("x")}, ["evaluate", "RUN", "--conformal", "2"]),
    "evaluate-shift-on-val-split": ({"ensemble.safetensors": lambda p: p.write_text("x")}, ["evaluate", "RUN", "--shift", "--split", "val"]),
    "evaluate-evaluation-file-missing": ({"ensemble.safetensors": lambda p: p.write_text("x")}, ["evaluate", "RUN", "--evaluation", "nothing.yaml"]),
    "checkpoint-not-safetensors": ({"checkpoints/train.safetensors": lambda p: (p.parent.mkdir(), p.write_text("torn"))}, ["train", "--resume", "RUN"]),
    "checkpoint-lacks-keys": ({"checkpoints/train.safetensors": lambda p: (p.parent.mkdir(), _st({"x": __import__("torch").zeros(1)},
                                                                                                   {"epoch": 1})(p))}, ["train", "--resume", "RUN"]),
    "checkpoint-malformed-json": ({"checkpoints/train.safetensors": lambda p: (p.parent.mkdir(), save_file({"x": __import__("torch").zeros(1)}, str(p),
                                                                                                             metadata={"json": "[1,"}))},
                                  ["train", "--resume", "RUN"]),
}


def _snapshot(folder):
    return sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*"))


def _check(capsys, code):
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2, err
    assert "Traceback" not in err and lines and lines[0].startswith("error:"), err
    # rich wraps a long line on narrow terminals; the message is still one logical line
    assert len(" ".join(lines)) < 1000


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_fails_cleanly_and_writes_nothing(case, tmp_path, capsys, monkeypatch, cli):
    monkeypatch.setenv("COLUMNS", "400")
    args = CASES[case](tmp_path)
    before = _snapshot(tmp_path)
    _check(capsys, cli(*args))
    assert not (tmp_path / "out").exists()
    assert _snapshot(tmp_path) == before  # nothing written anywhere


@pytest.mark.parametrize("case", list(RUN_DIR_CASES))
def test_bad_files_in_a_run_directory_fail_cleanly(case, tmp_path, capsys, monkeypatch, cli):
    monkeypatch.setenv("COLUMNS", "400")
    files, args = RUN_DIR_CASES[case]
    run_dir_with(files)(tmp_path)
    before = _snapshot(tmp_path)
    _check(capsys, cli(*[a.replace("RUN", str(tmp_path / "run")) for a in args]))
    assert _snapshot(tmp_path) == before


def test_the_corpus_is_large():
    assert len(CASES) + len(RUN_DIR_CASES) >= 60
