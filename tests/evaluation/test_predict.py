"""``ensemblekit predict`` and ``predict_array``: probabilities equal to what evaluate reports,
per-example uncertainties by hand, every input format, bad files rejected with nothing written."""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest
import torch

import ensemblekit as ek
from ensemblekit.evaluation.predict import predict_array, uncertainty_of


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    torch.manual_seed(0)
    data = ek.load_dataset("digits")
    method = ek.create_method("independent", model={"name": "cnn2d", "kwargs": {"channels": [4]}}, members=3, epochs=1,
                              progress=False).fit(data)
    folder = tmp_path_factory.mktemp("run")
    method.ensemble_.save(str(folder / "ensemble.safetensors"))
    return folder, method.ensemble_, data


def test_uncertainties_by_hand():
    p = torch.tensor([[[0.9, 0.1]], [[0.5, 0.5]], [[0.2, 0.8]]])  # 3 members, 1 example
    out = uncertainty_of(p)
    mean = torch.tensor([1.6 / 3, 1.4 / 3], dtype=torch.float64)
    h = lambda q: float(-(q * q.log()).sum())
    assert out["pred"].item() == 0 and torch.allclose(out["probs"][0], mean)
    assert out["entropy"].item() == pytest.approx(h(mean))
    expected = (h(torch.tensor([0.9, 0.1])) + h(torch.tensor([0.5, 0.5])) + h(torch.tensor([0.2, 0.8]))) / 3
    assert out["expected_entropy"].item() == pytest.approx(expected)
    assert out["mutual_information"].item() == pytest.approx(h(mean) - expected)
    assert out["disagreement"].item() == pytest.approx(1 / 3)  # member 2 says class 1 (member 1's tie goes to 0)


@pytest.mark.parametrize("fmt", ["npz", "npy", "csv"])
def test_predict_round_trips_the_probabilities_evaluate_reports(run, fmt, tmp_path, cli):
    folder, ens, data = run
    x, y = data.test.tensors()
    x = x[:50]
    path = tmp_path / f"inputs.{fmt}"
    if fmt == "npz":
        np.savez(path, x=x.numpy())
    elif fmt == "npy":
        np.save(path, x.numpy())
    else:
        with open(path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow([f"pixel{i}" for i in range(64)])  # a header line
            w.writerows(x.reshape(50, -1).tolist())
    out = tmp_path / ("pred.csv" if fmt == "csv" else "pred.npz")
    assert cli("predict", folder, "--data", path, "--out", out, "--members") == 0
    ref = ens.predict_proba(x).double()
    mean = ref.mean(0)
    if fmt == "csv":
        rows = list(csv.DictReader(open(out)))
        assert len(rows) == 50 and list(rows[0])[:3] == ["pred", "p_0", "p_1"]
        probs = torch.tensor([[float(r[f"p_{c}"]) for c in range(10)] for r in rows], dtype=torch.float64)
        member2 = torch.tensor([[float(r[f"member2_p_{c}"]) for c in range(10)] for r in rows], dtype=torch.float64)
        torch.testing.assert_close(probs, mean, atol=1e-5, rtol=1e-4)  # written with 6 significant digits
        torch.testing.assert_close(member2, ref[2], atol=1e-5, rtol=1e-4)
        assert [int(r["pred"]) for r in rows] == mean.argmax(-1).tolist()
    else:
        z = np.load(out)
        torch.testing.assert_close(torch.from_numpy(z["probs"]), mean, atol=1e-7, rtol=1e-6)
        torch.testing.assert_close(torch.from_numpy(z["member_probs"]), ref, atol=1e-7, rtol=1e-6)
        by_hand = uncertainty_of(ref)
        for k in ("entropy", "expected_entropy", "mutual_information", "disagreement"):
            torch.testing.assert_close(torch.from_numpy(z[k]), by_hand[k], atol=1e-7, rtol=1e-6)
        assert z["pred"].tolist() == mean.argmax(-1).tolist()


def test_predict_array_batches_like_one_pass(run):
    _, ens, data = run
    x = data.test.tensors()[0][:37].numpy()
    a, b = predict_array(ens, x, batch_size=5, members=True), predict_array(ens, x, batch_size=1000, members=True)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-6, atol=1e-7)
    assert a["member_probs"].shape == (3, 37, 10)
    c = ek.predict_array(ens, x)  # the top-level name of the same function
    np.testing.assert_allclose(c["probs"], ens.predict(torch.from_numpy(x)).numpy(), rtol=1e-6, atol=1e-7)


def _csv(rows):
    def write(path):
        with open(path, "w", newline="") as fh:
            csv.writer(fh).writerows(rows)
    return write


GOOD_ROW = [0.5] * 64
BAD = {
    "wrong-shape.npz": lambda p: np.savez(p, x=np.zeros((4, 3, 8, 8), dtype=np.float32)),
    "no-x.npz": lambda p: np.savez(p, inputs=np.zeros((4, 1, 8, 8), dtype=np.float32)),
    "objects.npz": lambda p: np.savez(p, x=np.array([{"a": 1}, None], dtype=object)),
    "strings.npy": lambda p: np.save(p, np.array([["a"] * 64])),
    "empty.npy": lambda p: np.save(p, np.zeros((0, 1, 8, 8), dtype=np.float32)),
    "nan-row.csv": _csv([GOOD_ROW, GOOD_ROW[:-1] + [float("nan")]]),
    "wide-row.csv": _csv([GOOD_ROW, GOOD_ROW + [1.0]]),
    "text-row.csv": _csv([GOOD_ROW, ["x"] * 64]),
    "empty.csv": _csv([]),
    "inputs.txt": _csv([GOOD_ROW]),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_prediction_inputs_fail_in_one_line_and_write_nothing(run, name, tmp_path, cli, capsys):
    folder, _, _ = run
    path = tmp_path / name
    BAD[name](path)
    before = set(os.listdir(tmp_path))
    assert cli("predict", folder, "--data", path, "--out", tmp_path / "pred.csv") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1, err
    assert set(os.listdir(tmp_path)) == before  # no output, no temporary left behind
