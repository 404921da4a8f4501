"""Every bad input fails cleanly and first: one line naming what is wrong, exit code 2, no traceback,
and nothing written (no half-made run directory that would block the corrected run).

Each case builds its inputs in a temporary folder, runs the command in-process and checks the
output folder it names is untouched."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
import yaml
from safetensors.torch import save_file

RUN = {"data": "digits", "model": {"name": "mlp", "kwargs": {"hidden": [8]}}, "method": {"name": "independent", "members": 2},
       "train": {"epochs": 1, "batch_size": 64, "optimizer": {"name": "adam", "lr": 0.01}, "progress": False}}
CMP = {"data": "digits", "model": {"name": "mlp", "kwargs": {"hidden": [8]}}, "train": RUN["train"], "budgets": [1], "seeds": [0],
       "methods": ["independent"]}


def _merge(base, patch):
    """``base`` with ``patch`` merged in; a ``model`` or ``method`` patch that names its own
    ``name``/``factory`` replaces the base's whole (so the case's one defect is the only one)."""
    out = dict(base)
    for k, v in patch.items():
        replaces = k in ("model", "method") and isinstance(v, dict) and ({"name", "factory"} & set(v))
        out[k] = _merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) and not replaces else v
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
    """A user's factory module, written outside the folder that must stay untouched (importing it
    writes ``__pycache__`` next to it unless PYTHONDONTWRITEBYTECODE is set)."""
    def build(tmp):
        import sys

        mods = tmp.parent / f"{tmp.name}-modules"
        mods.mkdir(exist_ok=True)
        (mods / "badnet.py").write_text(source)
        sys.path.insert(0, str(mods))
        sys.modules.pop("badnet", None)
        return train_with({"model": {"factory": path, "kwargs": {}}})(tmp)
    return build


def raw(*args):
    return lambda tmp: [a.replace("TMP", str(tmp)) for a in args]


def run_dir_with(files, finished):
    """A copy of the finished run ``finished`` with the given files written over it (``None``: keep it)."""
    def build(tmp):
        run = tmp / "run"
        shutil.copytree(finished, run)
        for name, writer in files.items():
            if writer is not None:
                if name.startswith("checkpoints/"):
                    shutil.rmtree(run / "checkpoints", ignore_errors=True)
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
    "device-cuda-absent": train_with({"train": {"device": "cuda"}}),
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
    "early-stopping-without-val": train_with({"data": {"name": "digits", "val_fraction": 0}, "train": {"early_stopping": {"patience": 2}}}),
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
    "factory-relative-module": train_with({"model": {"factory": ".mod:fn"}}),
    "factory-no-module": train_with({"model": {"factory": "nopkg_xyz.mod:make"}}),
    "factory-no-attribute": train_with({"model": {"factory": "os:no_such_function"}}),
    "factory-raises": factory_module("def make():\n    raise RuntimeError('my factory is broken')\n"),
    "factory-raises-at-import": factory_module("raise RuntimeError('broken at import')\ndef make():\n    pass\n"),
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
    "npz-float-labels": lambda tmp: (np.savez(tmp / "d.npz", x=X, y=Y + 0.5),
                                     train_with({"data": {"npz": str(tmp / "d.npz")}, "method": {"name": "boosting"}})(tmp))[1],
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

#: What each case's one line must name: the field (or file), the bad value, and what is allowed where there is a list.
EXPECT = {
    "epochs-0": r"train\.epochs: .*greater than or equal to 1 \(got 0",
    "epochs-typo": r"train\.epoch: unknown key; valid keys: epochs,",
    "epochs-string": r"train\.epochs: .*integer.*got 'many'",
    "batch-size-0": r"train\.batch_size: .*greater than or equal to 1 \(got 0",
    "lr-negative": r"train\.optimizer: .*lr must be a number > 0, got -1",
    "optimizer-unknown": r"train\.optimizer: unknown optimizer 'adamax2'; valid: sgd, adam",
    "optimizer-unknown-arg": r"train\.optimizer: .*unknown argument 'momentum'; valid: lr, betas",
    "sgd-negative-momentum": r"train\.optimizer .*momentum.*-0\.5",
    "adam-betas-out-of-range": r"train\.optimizer .*beta.*1\.5",
    "weight-decay-string": r"train\.optimizer .*'weight_decay': 'lots'",
    "per-member-wrong-length": r"per_member\.lr must list one value per member \(2\), got \[0\.1\]",
    "schedule-unknown": r"train\.schedule: unknown schedule 'cosin' .*valid: constant, cosine",
    "schedule-unknown-option": r"train\.schedule: .*unknown option 'gamma'; valid: min_lr",
    "milestones-string": r"train\.schedule .*'milestones': 'x'",
    "gamma-string": r"train\.schedule .*'gamma': 'big'",
    "warmup-too-long": r"train\.schedule: schedule\.warmup = 5 epoch\(s\).*must be shorter than the run",
    "grad-clip-negative": r"train\.grad_clip: .*greater than 0 \(got -1\)",
    "data-order-unknown": r"train\.data_order: .*'shared', 'per_member' or 'bootstrap' \(got 'random'\)",
    "device-unknown": r"train\.device: device must be auto, cpu, cuda, cuda:N or mps, got 'tpu'",
    "device-cuda-absent": r"device 'cuda' requested but CUDA is not available",
    "precision-unknown": r"train\.precision: .*'fp32', 'bf16' or 'fp16' \(got 'fp8'\)",
    "member-chunk-0": r"train\.member_chunk: .*>= 1, 'auto' or null, got 0",
    "member-chunk-string": r"train\.member_chunk.*got 'half'",
    "devices-empty": r"train\.devices: devices must list at least one device",
    "devices-unknown": r"train\.devices: .*must be cpu, cuda or cuda:N, got 'tpu:0'",
    "devices-cuda-absent": r"device 'cuda:0' requested but CUDA is not available",
    "member-chunk-shared-network": r"batch_ensemble: train\.member_chunk needs members that can run apart",
    "augment-unknown": r"train\.augment: unknown augment transform 'rotate'; valid: crop,",
    "augment-wrong-rank": r"hflip needs image examples \(C, H, W\); got examples of shape \(1, 40\)",
    "tta-unknown": r"train\.tta: unknown tta transform 'crop'; valid: hflip,",
    "mixup-negative": r"train\.mixup: .*greater than or equal to 0 \(got -1",
    "early-stopping-patience-0": r"train\.early_stopping\.patience: .*greater than or equal to 1 \(got 0",
    "early-stopping-without-val": r"train\.early_stopping needs a validation split",
    "penalty-negative": r"train\.penalties\.l2: .*greater than or equal to 0 \(got -1",
    "unknown-top-level-key": r"trainer: unknown key; valid keys: data, model, method",
    "method-unknown": r"method: unknown method 'boost' \(did you mean 'boosting'\?\); valid: ",
    "members-negative": r"method\.members: .*greater than or equal to 1 \(got -1",
    "method-param-unknown": r"method\.cycles: unknown key; valid keys: members",
    "snapshot-cycles-beyond-iterations": r"snapshot: cycles = 100000 need at least one iteration each, and the run has 21",
    "snapshot-cycle-longer-than-run": r"snapshot: a cycle of 105 iterations does not fit in the run's 21 iterations",
    "fge-a1-below-a2": r"FGE needs a1 > a2, got a1=0\.001 and a2=0\.01",
    "fge-no-cycle-middle": r"fge: no cycle middle falls within 1 epochs",
    "curve-below-3-bends": r"method\.num_bends: .*greater than or equal to 3 \(got 2",
    "varhyper-batchnorm": r"varhyper supports layers Linear, Conv1d, Conv2d.*unsupported: .*BatchNorm1d",
    "varhyper-lambda-outside": r"lambdas must lie in \[0\.001, 100\].*got \[1000\.0\]",
    "edgenes-members-above-pool": r"edgenes: members \(3\) must be <= pool \(2\)",
    "edgenes-search-typo": r"edgenes\.search\.step: unknown key; valid keys: .*steps",
    "model-unknown": r"model: unknown model 'cnn3d' .*valid: cnn1d",
    "model-kwarg-unknown": r"model: model 'mlp' got unknown argument 'width'; valid: ",
    "model-kwarg-wrong-type": r"model 'mlp' could not be built: .*'w'",
    "model-kwarg-negative": r"model 'mlp' could not be built: .*negative dimension -3",
    "model-dropout-2": r"dropout must be in \[0, 1\), got 2",
    "model-wrong-for-data": r"cnn1d needs input_shape \(channels, length\), got \(1, 8, 8\)",
    "wrapper-unknown": r"model: unknown model key 'frozen'; valid: name, factory",
    "frozen-head-negative": r"model: frozen_head must be a head scale >= 0 .*got -1",
    "dropconnect-1.5": r"model: dropconnect p must be a number in \[0, 1\), got 1\.5",
    "factory-relative-path": r"model factory './net\.py:make': './net\.py' is not an absolute module name",
    "factory-relative-module": r"model factory '\.mod:fn': '\.mod' is not an absolute module name",
    "factory-no-module": r"model factory 'nopkg_xyz\.mod:make': cannot import module 'nopkg_xyz\.mod' \(No module named 'nopkg_xyz'\)",
    "factory-no-attribute": r"model factory 'os:no_such_function': module 'os' has no attribute 'no_such_function'",
    "factory-raises": r"model 'badnet:make' could not be built: RuntimeError: my factory is broken",
    "factory-raises-at-import": r"model factory 'badnet:make': importing module 'badnet' failed \(RuntimeError: broken at import\)",
    "factory-syntax-error": r"model factory 'badnet:make': importing module 'badnet' failed \(SyntaxError: ",
    "factory-import-error": r"model factory 'badnet:make': importing module 'badnet' failed \(ModuleNotFoundError: No module named 'no_such_module_xyz'\)",
    "factory-returns-not-a-module": r"model factory 'badnet:make' returned int, not an nn\.Module",
    "dataset-unknown": r"data: unknown dataset 'mnist2d' .*valid: cifar10",
    "dataset-option-unknown": r"data: unknown option 'samples' for digits data; valid: test_fraction",
    "num-samples-string": r"data 'mnist1d' with options \{'num_samples': 'lots'\}",
    "val-fraction-string": r"data 'digits' with options \{'val_fraction': 'lots'\}",
    "val-fraction-1.5": r"val_fraction must be in \[0, 1\), got 1\.5",
    "yaml-empty": r"c\.yaml: the config file is empty",
    "yaml-a-list": r"c\.yaml: the top level must be a mapping of keys, got list",
    "yaml-syntax": r"c\.yaml: not valid YAML",
    "yaml-non-string-keys": r"c\.yaml: keys must be strings, got 1 \(int\)",
    "yaml-non-string-nested-key": r"c\.yaml: keys must be strings, got 3 \(int\) under train",
    "config-file-missing": r"config file not found: .*none\.yaml",
    "npz-not-a-zip": r"d\.npz: not an \.npz file",
    "npz-missing-y": r"d\.npz: missing array\(s\) \['y'\]; found \['x'\]",
    "npz-string-features": r"x must be numeric, got numpy dtype <U1",
    "npz-nan-features": r"1 example\(s\) have NaN or infinite features",
    "npz-lengths-differ": r"x has 40 examples but y has 30 labels",
    "npz-negative-label": r"labels must be in 0\.\.C-1, found a negative value -1",
    "npz-huge-label": r"labels go up to 1000000000000 but only 2 distinct values occur",
    "npz-float-labels": r"boosting trains on classification data, and this data is regression \(float targets\)",
    "npz-empty": r"the train split is empty",
    "npz-unknown-array": r"d\.npz: unexpected array\(s\) \['z'\]; allowed: x, y,",
    "npz-missing-file": r"npz file not found: /nonexistent/d\.npz",
    "compare-method-train-typo": r"methods\[independent\]\.train\.epoch: unknown key; valid keys: epochs",
    "compare-method-train-bad-value": r"independent 1B: train\.optimizer .*momentum.*-1",
    "compare-budget-0": r"budgets: budgets must be integers >= 1, got \[0\]",
    "compare-duplicate-labels": r"methods: method labels must be unique, \['independent'\] repeat",
    "compare-method-param-unknown": r"methods\.0\.cycles: unknown key; valid keys: pretrain",
    "compare-method-model-unknown": r"methods\.0\.model: unknown model 'cnn9'",
    "compare-model-kwarg-wrong-type": r"independent 1B: model 'mlp' could not be built",
    "evaluation-unknown-corruption": r"evaluation\.shift\.corruptions: unknown corruption 'fog'; valid: amplitude_scale",
    "evaluation-severity-6": r"evaluation\.shift\.severities: severities must be in 1\.\.5, got \[6\]",
    "evaluation-signal-corruption-on-images": r"evaluation\.shift: corruption 'time_shift' does not apply to images .*valid: brightness",
    "evaluation-mnist1d-generator-on-digits": r"evaluation\.shift: mnist1d_generator regenerates MNIST-1D test sets; the data is 'digits'",
    "evaluation-held-out-class-10": r"held_out_classes \[10\] are not classes of digits \(labels 0\.\.9\)",
    "evaluation-held-out-all-but-one": r"held_out_classes \[1, 2, .*9\] leaves 1 of 10 classes",
    "evaluation-two-held-out-sets": r"evaluation\.ood: at most one held_out_classes entry",
    "evaluation-unknown-ood-set": r"evaluation\.ood: unknown OOD set 'gaussian'; valid: constant",
    "evaluation-ood-npz-missing": r"OOD npz file not found: /nonexistent/ood\.npz",
    "evaluation-ood-npz-wrong-shape": r"o\.npz: x has shape \(5, 40\), expected \(N, 1, 8, 8\)",
    "evaluation-unknown-score": r"evaluation\.scores: unknown uncertainty score\(s\) \['odin'\]; valid: msp",
    "evaluation-conformal-alpha-1": r"evaluation\.conformal\.alpha: .*less than 1 \(got 1\.0\)",
    "evaluation-conformal-unknown-score": r"evaluation\.conformal\.scores\.0: .*'thr', 'aps' or 'raps' \(got 'naive'\)",
    "evaluation-calibration-without-val": r"evaluation\.calibration: temperature is fitted on the validation split",
    "evaluation-conformal-without-val": r"evaluation\.conformal: the sets are calibrated on the validation split",
    "evaluation-typo": r"evaluation\.shfit: unknown key; valid keys: calibration",
    "compare-evaluation-bad-corruption": r"evaluation\.shift\.corruptions: unknown corruption 'swirl'",
    "compare-evaluation-held-out-class-10": r"held_out_classes \[10\] are not classes of digits",
    "set-without-equals": r"--set expects key=value, got 'train\.epochs'",
    "set-through-a-number": r"--set train\.epochs\.x: 'epochs' is not a mapping",
    "set-bad-value": r"train\.epochs: .*greater than or equal to 1 \(got -2",
    "resume-not-a-run": r"--resume .*nothing: no config\.yaml there",
    "evaluate-not-a-run": r"nothing: no ensemble\.safetensors",
    "threads-0": r"'--threads'.*greater than or equal to 1",
    "backend-unknown": r"unknown backend 'spark'; valid: local, ray",
}

# Each run-directory case starts from a real finished run (its ensemble.safetensors valid), and
# writes only its one defect over it.
RUN_DIR_CASES = {
    "ensemble-lacks-tensors": ({"ensemble.safetensors": _st({"x": __import__("torch").zeros(1)}, {
        "format": "ensemblekit.ensemble/1", "members": [{}],
        "groups": [{"spec": {"name": "mlp", "kwargs": {"input_shape": [1, 8, 8], "num_classes": 10, "hidden": [8]}}, "frozen": [], "members": 1}]})},
        ["evaluate", "RUN"]),
    "ensemble-malformed-metadata": ({"ensemble.safetensors": lambda p: save_file({"x": __import__("torch").zeros(1)}, str(p), metadata={"json": "{not json"})},
                                    ["evaluate", "RUN"]),
    "ensemble-not-safetensors": ({"ensemble.safetensors": lambda p: p.write_text("garbage")}, ["evaluate", "RUN"]),
    "evaluate-unknown-data": ({"ensemble.safetensors": None}, ["evaluate", "RUN", "--data", "mnist9"]),
    "evaluate-unknown-split": ({"ensemble.safetensors": None}, ["evaluate", "RUN", "--split", "holdout"]),
    "evaluate-ood-held-out-without-classes": ({"ensemble.safetensors": None}, ["evaluate", "RUN", "--ood", "held_out"]),
    "evaluate-ood-unknown": ({"ensemble.safetensors": None}, ["evaluate", "RUN", "--ood", "gauss"]),
    "evaluate-conformal-alpha-2": ({"ensemble.safetensors": None}, ["evaluate", "RUN", "--conformal", "2"]),
    "evaluate-shift-on-val-split": ({"ensemble.safetensors": None}, ["evaluate", "RUN", "--shift", "--split", "val"]),
    "evaluate-evaluation-file-missing": ({"ensemble.safetensors": None}, ["evaluate", "RUN", "--evaluation", "nothing.yaml"]),
    "checkpoint-not-safetensors": ({"checkpoints/train.safetensors": lambda p: (p.parent.mkdir(exist_ok=True), p.write_text("torn"))}, ["train", "--resume", "RUN"]),
    "checkpoint-lacks-keys": ({"checkpoints/train.safetensors": lambda p: (p.parent.mkdir(exist_ok=True), _st({"x": __import__("torch").zeros(1)},
                                                                                                   {"epoch": 1})(p))}, ["train", "--resume", "RUN"]),
    "checkpoint-malformed-json": ({"checkpoints/train.safetensors": lambda p: (p.parent.mkdir(exist_ok=True), save_file({"x": __import__("torch").zeros(1)}, str(p),
                                                                                                             metadata={"json": "[1,"}))},
                                  ["train", "--resume", "RUN"]),
}


RUN_DIR_EXPECT = {
    "ensemble-lacks-tensors": r"ensemble\.safetensors: lacks tensor '.*' of the model its metadata names",
    "ensemble-malformed-metadata": r"ensemble\.safetensors: its JSON metadata is malformed",
    "ensemble-not-safetensors": r"ensemble\.safetensors: not a readable safetensors file",
    "evaluate-unknown-data": r"unknown dataset 'mnist9' .*valid: cifar10",
    "evaluate-unknown-split": r"--split must be test, val or train, got 'holdout'",
    "evaluate-ood-held-out-without-classes": r"--ood held_out: .*was trained on every class",
    "evaluate-ood-unknown": r"ood: unknown OOD set 'gauss'; valid: constant",
    "evaluate-conformal-alpha-2": r"conformal\.alpha: .*less than 1 \(got 2\.0\)",
    "evaluate-shift-on-val-split": r"the uncertainty evaluation reads the test split .*drop --split",
    "evaluate-evaluation-file-missing": r"config file not found: nothing\.yaml",
    "checkpoint-not-safetensors": r"checkpoints/train\.safetensors: not a readable safetensors file",
    "checkpoint-lacks-keys": r"checkpoints/train\.safetensors: a damaged checkpoint \(lacks ensemble",
    "checkpoint-malformed-json": r"checkpoints/train\.safetensors: its JSON metadata is malformed",
}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A real run of ``RUN`` (two members, one epoch), trained once for the run-directory cases."""
    from ensemblekit.cli import main

    root = tmp_path_factory.mktemp("finished")
    (root / "c.yaml").write_text(yaml.safe_dump(RUN))
    with pytest.raises(SystemExit) as exc:
        main(["train", str(root / "c.yaml"), "--run-dir", str(root / "run")])
    assert exc.value.code in (0, None)
    return root / "run"


def _snapshot(folder):
    return sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*"))


def _check(capsys, code, expect):
    """Exit 2 and exactly one line, ``error: ...``, that matches ``expect`` (what it must name)."""
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2, err
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("error:"), err
    assert re.search(expect, lines[0]), f"{lines[0]!r} does not name {expect!r}"


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_fails_cleanly_and_writes_nothing(case, tmp_path, capsys, monkeypatch, cli):
    monkeypatch.setenv("COLUMNS", "2000")  # rich wraps at the terminal's width; the message is one line
    monkeypatch.setattr("sys.path", list(__import__("sys").path))  # a factory case's folder leaves with the case
    args = CASES[case](tmp_path)
    before = _snapshot(tmp_path)
    _check(capsys, cli(*args), EXPECT[case])
    assert not (tmp_path / "out").exists()
    assert _snapshot(tmp_path) == before  # nothing written anywhere


@pytest.mark.parametrize("case", list(RUN_DIR_CASES))
def test_bad_files_in_a_run_directory_fail_cleanly(case, tmp_path, capsys, monkeypatch, cli, finished_run):
    monkeypatch.setenv("COLUMNS", "2000")
    files, args = RUN_DIR_CASES[case]
    run_dir_with(files, finished_run)(tmp_path)
    before = _snapshot(tmp_path)
    _check(capsys, cli(*[a.replace("RUN", str(tmp_path / "run")) for a in args]), RUN_DIR_EXPECT[case])
    assert _snapshot(tmp_path) == before


def test_the_corpus_is_large_and_every_case_says_what_it_must_name():
    assert len(CASES) + len(RUN_DIR_CASES) >= 60
    assert set(EXPECT) == set(CASES) and set(RUN_DIR_EXPECT) == set(RUN_DIR_CASES)


def test_a_valid_input_passes_the_checks_the_cases_break(tmp_path, cli, finished_run):
    """The base the cases patch is itself valid: each case fails for its own defect only."""
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({**RUN, "out": str(tmp_path / "out")}))
    assert cli("train", str(tmp_path / "c.yaml")) in (0, None)
    assert cli("evaluate", str(finished_run)) in (0, None)
