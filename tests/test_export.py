"""One-graph export: torch.export, TorchScript and ONNX programs equal predict() to 1e-5, load
without ensemblekit, and refuse what no static graph can reproduce."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

import ensemblekit as ek
from ensemblekit import Ensemble
from ensemblekit.errors import ConfigError
from ensemblekit.models import model_factory

from ensemblekit.export import FORMATS as EXT
from optional import have, need

FORMATS = ["export", "torchscript", "onnx"]


def _ens(data, specs):
    parts = [Ensemble.from_factory(model_factory(s, input_shape=data.input_shape, num_classes=data.num_classes), seeds=[i, i + 10])
             for i, s in enumerate(specs)]
    ens = Ensemble.cat(parts)
    with torch.no_grad():  # BatchNorm statistics away from their defaults, so eval mode matters
        for g in ens.groups:
            for k, v in g.buffers.items():
                if "running_mean" in k:
                    v.normal_(0, 0.5)
                elif "running_var" in k:
                    v.uniform_(0.5, 2.0)
    return ens


@pytest.fixture(scope="module")
def signals():
    return ek.load_dataset("mnist1d", num_samples=400)


CASES = {
    "cnn1d_bn": [{"name": "cnn1d", "kwargs": {"channels": 8}}],
    "heterogeneous": [{"name": "mlp", "kwargs": {"hidden": [16], "batchnorm": True}}, {"name": "cnn1d", "kwargs": {"channels": 4}}],
    "darts_and_cnn": [{"name": "darts", "kwargs": {"channels": 4, "layers": 2}}, {"name": "cnn1d", "kwargs": {"channels": 4}}],  # an EdgeNES-style mix
}

_LOADER = r"""
import sys
sys.modules["ensemblekit"] = None  # importing ensemblekit now fails: the files must not need it
import numpy as np, torch
xs, paths = sys.argv[1], sys.argv[2:]
x = torch.from_numpy(np.load(xs))
for path in paths:
    if path.endswith(".pt2"):
        out = torch.export.load(path).module()(x)
    elif path.endswith(".pt"):
        out = torch.jit.load(path)(x)
    else:
        import onnxruntime
        out = torch.from_numpy(onnxruntime.InferenceSession(path).run(None, {"x": x.numpy()})[0])
    np.save(path + ".out.npy", out.detach().numpy())
"""


def _formats() -> list[str]:
    """The formats to check here: ONNX needs onnx, onnxscript and onnxruntime (a missing one
    skips the ONNX check visibly after the others pass, and fails in CI)."""
    return FORMATS if all(have(m) for m in ("onnx", "onnxscript", "onnxruntime")) else FORMATS[:2]


@pytest.mark.parametrize("case", sorted(CASES))
def test_exported_graphs_equal_predict_and_load_without_ensemblekit(signals, case, tmp_path):
    ens = _ens(signals, CASES[case])
    x = signals.test.tensors()[0]
    formats = _formats()
    paths = [ek.export(ens, str(tmp_path / f"ens{EXT[fmt]}"), format=fmt) for fmt in formats]
    xs = tmp_path / "x.npy"
    np.save(xs, x.numpy())
    proc = subprocess.run([sys.executable, "-c", _LOADER, str(xs), *paths], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for path in paths:
        out = torch.from_numpy(np.load(path + ".out.npy"))
        assert out.shape == (len(x), signals.num_classes)  # a batch size other than the traced one
        torch.testing.assert_close(out, ens.predict(x), atol=1e-5, rtol=1e-5, msg=path)
    if "onnx" not in formats:
        for module in ("onnx", "onnxscript", "onnxruntime"):
            need(module, "the ONNX export equals predict()")


def test_export_with_members_and_of_a_one_network_ensemble(signals, tmp_path):
    from ensemblekit.efficient.batchensemble import to_batch_ensemble
    from ensemblekit.efficient.shared import SharedEnsemble

    ens = _ens(signals, CASES["cnn1d_bn"])
    x = signals.test.tensors()[0][:17]
    program = torch.export.load(ek.export(ens, str(tmp_path / "m.pt2"), members=True)).module()
    mean, members = program(x)
    torch.testing.assert_close(members, ens.predict_proba(x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mean, ens.predict(x), atol=1e-5, rtol=1e-5)
    base = model_factory({"name": "cnn1d", "kwargs": {"channels": 4}}, input_shape=signals.input_shape, num_classes=10)
    shared = SharedEnsemble(to_batch_ensemble(base(), members=3), "batch_ensemble", {"members": 3}, base.spec).eval()
    traced = torch.jit.load(ek.export(shared, str(tmp_path / "be.pt"), format="torchscript"))
    torch.testing.assert_close(traced(x), shared.predict(x), atol=1e-5, rtol=1e-5)


def test_export_refuses_mc_dropout_and_unknown_formats(signals, tmp_path, cli):
    from ensemblekit.efficient.mcdropout import MCDropout
    from ensemblekit.export import export

    ens = _ens(signals, CASES["cnn1d_bn"])
    with pytest.raises(ConfigError, match="format must be one of"):
        export(ens, str(tmp_path / "x.bin"), format="pickle")
    mc = object.__new__(MCDropout)
    with pytest.raises(ConfigError, match="random dropout passes"):
        export(mc, str(tmp_path / "mc.pt2"))
    run = tmp_path / "run"
    run.mkdir()
    ens.save(str(run / "ensemble.safetensors"))
    assert cli("export", run, "--format", "torchscript") == 0
    assert (run / "ensemble.pt").is_file()
    assert cli("export", run, "--format", "tflite") == 2
