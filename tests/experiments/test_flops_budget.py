"""``budget_unit: flops``: every row spends its budget to within 5%, in optimisation steps, all passes counted."""

from __future__ import annotations

import pytest

from ensemblekit.config import CompareConfig, load_config
from ensemblekit.data.batching import steps_per_epoch
from ensemblekit.experiments.cells import cell_data, cell_method
from ensemblekit.experiments.compare import cell_specs, run_compare


def test_every_row_of_a_flops_comparison_is_within_five_percent_of_its_budget(blobs, tmp_path):
    # BatchEnsemble's epoch costs ~4 single models (whole epochs would miss by far), SWAG adds 10 BatchNorm passes
    cfg = CompareConfig(model={"name": "mlp", "kwargs": {"hidden": [32], "batchnorm": True}},
                        train={"epochs": 6, "batch_size": 32, "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9}},
                        budgets=[1, 2], budget_unit="flops", seeds=[0],
                        methods=[{"name": "independent", "label": "Ind", "members": 1},
                                 {"name": "batch_ensemble", "label": "BE", "members": 4},
                                 {"name": "swag", "label": "SWAG", "samples": 10, "pretrain": 0.5},
                                 {"name": "swa", "label": "SWA", "pretrain": 0.5}])
    rows = run_compare(cfg, str(tmp_path), data=blobs).rows
    assert len(rows) == 8 and not any("failed" in r for r in rows)
    for r in rows:
        kw = r["budget_kwargs"]
        assert kw["budget_unit"] == "flops"
        assert abs(r["cost"]["train_flops"] / kw["budget_flops"] - 1) <= 0.05, (r["method"], r["budget"], r["cost"])
    be = next(r for r in rows if r["method"] == "BE" and r["budget"] == 1)
    assert be["budget_kwargs"]["passes"] % 1 != 0  # a fraction of an epoch: whole epochs could not fit it
    swag = next(r for r in rows if r["method"] == "SWAG" and r["budget"] == 1)
    assert swag["cost"]["flops_by_stage"]["samples_bn"] > 0 and swag["budget_kwargs"]["passes"] < 6


@pytest.mark.slow
def test_the_planned_allocation_of_every_method_of_the_digits_flops_config_is_within_five_percent():
    cfg = load_config("configs/compare_efficient_digits.yaml", CompareConfig, [])
    specs = [s for s in cell_specs(cfg) if s["seed"] == cfg.seed_list[0]]
    data = cell_data(specs[0])
    for s in specs:
        method, kw = cell_method(s, data)
        if kw["budget_unit"] != "flops":
            continue
        method.validate()
        spe = steps_per_epoch(data.train, method.train_config_.batch_size)
        planned = method.train_config_.total_steps(spe) / spe * method.epoch_flops(data) + method.pass_flops(data)
        assert abs(planned / kw["budget_flops"] - 1) <= 0.05, (s["label"], s["budget"])
