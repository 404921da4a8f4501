"""Compare configs: a method may bring its own model (e.g. frozen vs ordinary head in one table)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ensemblekit.config import CompareConfig, MethodConfig
from ensemblekit.ensemble import Ensemble
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
