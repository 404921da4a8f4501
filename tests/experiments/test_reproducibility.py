"""The reproducibility the README promises: the same machine, thread count and code give the same bits."""

from __future__ import annotations

import torch
from safetensors.torch import load_file

from ensemblekit.config import CompareConfig
from ensemblekit.experiments.compare import run_compare


def test_a_comparison_rerun_with_the_same_settings_is_bit_identical(blobs, tmp_path):
    cfg = CompareConfig(model={"name": "mlp", "kwargs": {"hidden": [16], "batchnorm": True, "dropout": 0.1}},
                        train={"epochs": 3, "batch_size": 32, "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9}},
                        budgets=[1, 2], seeds=[0, 1],
                        methods=[{"name": "independent", "label": "Ind"}, {"name": "fge", "label": "FGE", "pretrain": 0.5}])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        first = run_compare(cfg, str(tmp_path / "a"), data=blobs).rows
        second = run_compare(cfg, str(tmp_path / "b"), data=blobs).rows
    finally:
        torch.set_num_threads(threads)
    assert len(first) == 8
    for a, b in zip(first, second):
        assert (a["method"], a["budget"], a["seed"]) == (b["method"], b["budget"], b["seed"])
        assert a["test"] == b["test"] and a.get("val") == b.get("val")  # every metric, to the last bit
        key = f"{a['method']}-b{a['budget']}-s{a['seed']}"
        wa, wb = (load_file(str(tmp_path / d / "cells" / key / "ensemble.safetensors")) for d in ("a", "b"))
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
