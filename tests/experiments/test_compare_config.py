"""Compare configs: a method may bring its own model (e.g. frozen vs ordinary head in one table)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ensemblekit.config import CompareConfig, MethodConfig
from ensemblekit.ensemble import Ensemble
from ensemblekit.errors import ConfigError
from ensemblekit.experiments.backends import LocalBackend
from ensemblekit.experiments.compare import cell_specs, run_compare


def _cfg() -> CompareConfig:
    return CompareConfig(
        model={"name": "mlp", "kwargs": {"hidden": [16]}},
        train={"epochs": 1, "batch_size": 32, "optimizer": {"name": "adam", "lr": 0.01}, "progress": False},
        budgets=[1], seeds=[0],
        methods=[{"name": "independent", "label": "shared"},
                 {"name": "independent", "label": "own", "model": {"name": "mlp", "kwargs": {"hidden": [8]}, "frozen_head": 2.0}}],
    )


def test_a_method_model_overrides_the_shared_one_in_its_cells_only():
    specs = {s["label"]: s for s in cell_specs(_cfg())}
    assert specs["shared"]["model"] == {"name": "mlp", "kwargs": {"hidden": [16]}}
    assert specs["own"]["model"]["kwargs"] == {"hidden": [8]} and specs["own"]["model"]["frozen_head"] == 2.0
    assert MethodConfig(**specs["own"]["method"]).model is not None  # the spec round-trips
    with pytest.raises(ValidationError, match="unknown model 'mlp3'"):
        MethodConfig(name="independent", model="mlp3")


def test_compare_trains_each_method_on_its_own_model(blobs, tmp_path):
    rows = run_compare(_cfg(), str(tmp_path), data=blobs, backend=LocalBackend()).rows
    assert {r["method"] for r in rows} == {"shared", "own"}
    widths = {}
    for label in ("shared", "own"):
        ens = Ensemble.load(str(next(tmp_path.glob(f"cells/{label}-b1-s0*/ensemble.safetensors"))))
        first = next(v for k, v in ens.groups[0].params.items() if k.endswith("weight"))
        widths[label] = first.shape[1]
    assert widths == {"shared": 16, "own": 8}


def test_method_parameters_are_validated_once_by_the_config_and_again_only_when_changed():
    from ensemblekit.config import MethodConfig
    from ensemblekit.experiments.run import build_method

    cfg = MethodConfig.model_validate({"name": "independent", "members": 3})
    method = build_method(cfg, {"name": "mlp"}, {"epochs": 1}, seed=0)
    method.validate()
    assert method.params_ is cfg.hyperparameters  # the config's validated object, not a second validation
    over = build_method(cfg, {"name": "mlp"}, {"epochs": 1}, seed=0, members=4)  # a budget's override: validated here
    over.validate()
    assert over.params_.members == 4 and over.params_ is not cfg.hyperparameters
    method.params["members"] = 0  # changed after validation: checked again
    with pytest.raises(ConfigError, match="members"):
        method.validate()
