"""One surface for every registered method (scikit-learn's parametrize_with_checks idea)."""

from __future__ import annotations

import pytest
import torch

import ensemblekit as ek
from ensemblekit.errors import ConfigError
from ensemblekit.methods import METHODS
from ensemblekit.training.config import TrainConfig

SMALL = {"model": {"name": "mlp", "kwargs": {"hidden": [16]}}, "epochs": 2, "batch_size": 32, "progress": False}


@pytest.mark.parametrize("name", METHODS.names())
def test_method_surface(name, blobs):
    cls = METHODS.get(name)
    assert issubclass(cls, ek.Method) and cls.name == name
    method = ek.create_method(name, **SMALL, **getattr(cls, "test_params", {}))
    assert method.fit(blobs) is method
    ens = method.ensemble_
    assert isinstance(ens, ek.Ensemble) and len(ens) >= 1
    probs = method.predict_proba(blobs.test.x)
    assert probs.shape == (len(ens), len(blobs.test), blobs.num_classes)
    torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:2]))
    assert isinstance(method.history_, list) and method.history_
    assert method.train_seconds_ > 0
    assert isinstance(cls.at_budget(3, TrainConfig(**{k: v for k, v in SMALL.items() if k != "model"})), dict)
    with pytest.raises(ConfigError, match="unknown argument 'bogus'"):
        ek.create_method(name, bogus=1)


@pytest.mark.parametrize("name", METHODS.names())
def test_unfitted_method_says_so(name):
    with pytest.raises(ConfigError, match="not fitted"):
        ek.create_method(name).predict_proba(torch.zeros(1, 8))


def test_user_factory_from_a_module_path_and_a_python_callable(blobs, tmp_path, monkeypatch):
    (tmp_path / "my_nets.py").write_text(
        "import torch\n"
        "def make_net(width=8, input_shape=None, num_classes=None):\n"
        "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(8, width), torch.nn.ReLU(), torch.nn.Linear(width, num_classes))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = {"factory": "my_nets:make_net", "kwargs": {"width": 6}}
    method = ek.create_method("independent", model=spec, members=2, epochs=1, progress=False).fit(blobs)
    path = str(tmp_path / "e.safetensors")
    method.ensemble_.save(path)
    back = ek.Ensemble.load(path)  # rebuilt from the saved spec, no pickle
    torch.testing.assert_close(back.predict_proba(blobs.test.x), method.ensemble_.predict_proba(blobs.test.x))
    plain = ek.create_method("independent", model=lambda: torch.nn.Linear(8, 3), members=2, epochs=1, progress=False).fit(blobs)
    assert plain.predict_proba(blobs.test.x).shape == (2, len(blobs.test), 3)
