"""Tabular data from a .csv file: targets named by column, every bad cell one line naming its place."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ensemblekit.config import DataConfig
from ensemblekit.data.csvfile import load_csv
from ensemblekit.errors import ConfigError, DataError


def _write(path, header, rows):
    path.write_text(",".join(header) + "\n" + "\n".join(",".join(str(v) for v in r) for r in rows) + "\n")
    return str(path)


def test_a_named_target_column_becomes_float_regression_targets_and_the_rest_features(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 3)).round(4)
    y = (x @ [1.0, -2.0, 0.5] + 0.25).round(4)
    path = _write(tmp_path / "t.csv", ["a", "price", "b", "c"], [[x[i, 0], y[i], x[i, 1], x[i, 2]] for i in range(50)])
    data = load_csv(path, target="price", val_fraction=0.0, test_fraction=0.2)
    assert data.task == "regression" and data.input_shape == (3,) and data.info["features"] == ["a", "b", "c"]
    xs = torch.cat([data.train.x, data.test.x]); ys = torch.cat([data.train.y, data.test.y])
    assert len(xs) == 50 and data.train.y.dtype == torch.float32
    back = {tuple(np.round(r.tolist(), 4)): float(v) for r, v in zip(xs, ys)}
    assert back[tuple(x[7].tolist())] == pytest.approx(y[7], abs=1e-4)  # each row's target stays with its features
    two = load_csv(path, target=["price", "c"], task="regression", val_fraction=0.0)
    assert two.target_shape == (2,) and two.input_shape == (2,)
    same = DataConfig(csv=path, target="price", val_fraction=0.0, test_fraction=0.2).load()
    assert torch.equal(same.test.x, data.test.x)


def test_whole_number_labels_are_classes_when_stated(tmp_path):
    rows = [[i * 0.1, i % 3] for i in range(30)]
    path = _write(tmp_path / "c.csv", ["x", "label"], rows)
    data = load_csv(path, task="classification", val_fraction=0.0)
    assert data.task == "classification" and data.num_classes == 3 and data.train.y.dtype == torch.int64
    with pytest.raises(DataError, match="state the task"):
        load_csv(path, val_fraction=0.0)


@pytest.mark.parametrize("text, match", [
    ("a,b\n1,2\n3,x\n", r"line 3, column 'b': 'x' is not a number"),
    ("a,b\n1,2\n3\n", "line 3 has 1 values, the header names 2 columns"),
    ("a,b\n", "needs a header line and at least one example"),
    ("a,a\n1,2\n", "names a column twice"),
])
def test_a_bad_cell_is_named_by_line_and_column(tmp_path, text, match):
    (tmp_path / "bad.csv").write_text(text)
    with pytest.raises(DataError, match=match):
        load_csv(str(tmp_path / "bad.csv"))


def test_unknown_target_and_nan_targets_are_refused(tmp_path):
    path = _write(tmp_path / "n.csv", ["a", "y"], [[1.5, 0.5], [2.5, "nan"], [3.5, 1.5], [4.5, 2.5]])
    with pytest.raises(ConfigError, match="no target column 'z'; the columns are a, y"):
        load_csv(path, target="z")
    with pytest.raises(DataError, match="NaN|finite"):
        load_csv(path, task="regression", val_fraction=0.0, test_fraction=0.25)
