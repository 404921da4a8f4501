"""Repeated random train/test splits (data.splits): the UCI protocol's 20 splits of one dataset."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
import torch

import ensemblekit as ek
from ensemblekit.config import CompareConfig, DataConfig
from ensemblekit.data.splits import resplit
from ensemblekit.errors import ConfigError, DataError
from ensemblekit.experiments.compare import cell_specs


def _rows(split) -> set[tuple[float, ...]]:
    return {tuple(r.tolist()) for r in split.x}


def test_a_split_pools_every_example_and_cuts_the_documented_shares():
    data = ek.load_dataset("diabetes")
    n = len(data.train) + len(data.val or []) + len(data.test)
    part = resplit(data, 3, test_fraction=0.1)
    assert len(part.test) == round(0.1 * n) == 44
    share = len(data.val) / (len(data.train) + len(data.val)) if data.val is not None else 0.0
    assert len(part.val or []) == round(share * (n - 44))
    assert len(part.train) + len(part.val or []) + len(part.test) == n
    everything = _rows(data.train) | (_rows(data.val) if data.val is not None else set()) | _rows(data.test)
    mine = _rows(part.train) | (_rows(part.val) if part.val is not None else set()) | _rows(part.test)
    assert mine == everything and not (_rows(part.train) & _rows(part.test))  # a partition of the same examples
    assert part.task == "regression" and part.info["split"] == {"index": 3, "test_fraction": 0.1, "seed": 0}


def test_the_same_index_gives_the_same_split_and_another_index_another():
    data = ek.load_dataset("diabetes")
    a, b, c = resplit(data, 5), resplit(data, 5), resplit(data, 6)
    assert torch.equal(a.test.x, b.test.x) and torch.equal(a.train.y, b.train.y) and a.digest() == b.digest()
    assert not torch.equal(a.test.x, c.test.x) and a.digest() != c.digest()
    # 20 splits: every example is tested in some split (44 of 442 each: 1 - 0.9^20 ~ 88% by chance)
    tested = set().union(*(_rows(resplit(data, k).test) for k in range(20)))
    assert len(tested) > 0.8 * 442


def test_bad_split_settings_are_one_line_errors():
    data = ek.load_dataset("diabetes")
    with pytest.raises(ConfigError, match="split index must be an int >= 0"):
        resplit(data, -1)
    with pytest.raises(ConfigError, match=r"split_fraction must be in \(0, 1\)"):
        resplit(data, 0, test_fraction=1.0)
    with pytest.raises(DataError, match="too few"):
        resplit(ek.load_dataset("toy_cubic", num_train=2, num_test=2), 0, test_fraction=0.75)
    with pytest.raises(ValidationError, match="splits"):  # a config file gets it as one line (schema/)
        DataConfig(name="diabetes", splits=0)


def test_compare_with_splits_makes_one_cell_per_split_and_seed(tmp_path):
    cfg = CompareConfig(data={"name": "diabetes", "splits": 3}, model={"name": "mlp", "kwargs": {"hidden": [8]}},
                        train={"epochs": 1}, budgets=[1], seeds=[0, 1], methods=[{"name": "independent", "label": "Ind"}],
                        out=str(tmp_path))
    specs = cell_specs(cfg)
    assert [(s["split"], s["seed"]) for s in specs] == [(k, s) for k in range(3) for s in (0, 1)]
    assert len({s["key"] for s in specs}) == 6 and specs[0]["key"] == "Ind-b1-s0-k0"
    assert specs[2]["data"] == {"name": "diabetes", "options": {}, "split": 1}  # the count K is not part of a cell
    loaded = DataConfig(**specs[2]["data"]).load()
    assert torch.equal(loaded.test.x, resplit(ek.load_dataset("diabetes"), 1).test.x)
    plain = CompareConfig(data="diabetes", model="mlp", train={"epochs": 1}, budgets=[1], seeds=[0],
                          methods=[{"name": "independent"}], out=str(tmp_path))
    assert "split" not in cell_specs(plain)[0] and cell_specs(plain)[0]["key"] == "independent-b1-s0"


def test_one_run_with_splits_is_refused_it_names_split_instead():
    from ensemblekit.config import RunConfig

    with pytest.raises(ValidationError, match="use data.split: k"):
        RunConfig(data={"name": "diabetes", "splits": 5}, method={"name": "independent"})
    assert RunConfig(data={"name": "diabetes", "split": 2}, method={"name": "independent"}).data.split == 2
