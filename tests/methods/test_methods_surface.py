"""One surface for every registered method (scikit-learn's parametrize_with_checks idea)."""

from __future__ import annotations

import warnings

import numpy as np

import pytest
import torch

import ensemblekit as ek
from ensemblekit.errors import ConfigError
from ensemblekit.methods import METHODS
from ensemblekit.predictors import Predictor, load_predictor
from ensemblekit.training import Callback
from ensemblekit.training.config import TrainConfig

SMALL = {"model": {"name": "mlp", "kwargs": {"hidden": [16]}}, "epochs": 2, "batch_size": 32, "progress": False}
TINY_SEARCH = {"steps": 2, "channels": 2, "nodes": 2, "batch_size": 16}


def _make(name: str) -> ek.Method:
    cls = METHODS.get(name)
    return ek.create_method(name, **SMALL, **getattr(cls, "test_params", {}))


class Count(Callback):
    """Counts what the engine calls; optionally raises (as a kill would) at one step."""

    def __init__(self, kill_at: int | None = None) -> None:
        self.starts = self.steps = self.epochs = self.ends = 0
        self.kill_at = kill_at

    def on_train_start(self, trainer):
        self.starts += 1

    def on_step_end(self, trainer, step, batch):
        self.steps += 1
        if self.steps == self.kill_at:
            raise KeyboardInterrupt

    def on_epoch_end(self, trainer, epoch, logs):
        self.epochs += 1

    def on_train_end(self, trainer):
        self.ends += 1


@pytest.mark.parametrize("name", METHODS.names())
def test_method_surface(name, blobs, tmp_path):
    cls = METHODS.get(name)
    assert issubclass(cls, ek.Method) and cls.name == name
    method = _make(name)
    count = Count()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # boosting warns about the trainable head of the plain mlp
        assert method.fit(blobs, callbacks=[count]) is method
    ens = method.ensemble_
    assert isinstance(ens, Predictor) and ens.num_members >= 1 and len(ens.members_info) == ens.num_members
    probs = method.predict_proba(blobs.test.x)
    assert probs.shape == (ens.num_members, len(blobs.test), blobs.num_classes)
    torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:2]))
    ens.save(str(tmp_path / "e.safetensors"))  # every predictor reads back from its file, no code run
    torch.testing.assert_close(load_predictor(str(tmp_path / "e.safetensors")).predict_proba(blobs.test.x), probs, rtol=0, atol=0)
    # history_: one record per epoch of every stage, each naming its stage
    assert isinstance(method.history_, list) and method.history_
    assert all(isinstance(h, dict) and isinstance(h.get("stage"), str) for h in method.history_)
    # cost_: seconds per stage plus fit_s; flops_: the same stages, measured
    assert set(method.cost_) - {"fit_s"} == set(method.flops_) and "fit_s" in method.cost_
    assert all(isinstance(v, float) and v >= 0 for v in method.cost_.values())
    assert method.train_seconds_ > 0 and method.train_flops_ is not None and method.train_flops_ > 0
    # callbacks reach the engine: every engine stage started, stepped, logged epochs and ended
    assert count.starts >= 1 and count.ends == count.starts and count.steps >= count.epochs >= 1
    assert isinstance(method.details(blobs), dict)
    budget = TrainConfig(**{k: v for k, v in SMALL.items() if k != "model"})
    spent = [cls.at_budget(k, budget) for k in (1, 2, 3)]  # None: the method cannot spend that budget
    assert all(s is None or isinstance(s, dict) for s in spent) and any(isinstance(s, dict) for s in spent)
    with pytest.raises(ConfigError, match="unknown argument 'bogus'"):
        ek.create_method(name, bogus=1)


@pytest.mark.parametrize("name", METHODS.names())
def test_resume_from_a_checkpoint_continues_where_the_kill_stopped(name, blobs, tmp_path):
    # 240 examples / 32 = 8 steps per epoch: a kill at step 10 falls in the second epoch of the
    # first stage, after the first epoch's checkpoint
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full_count = Count()
        full = _make(name).fit(blobs, run_dir=str(tmp_path / "full"), callbacks=[full_count])
        with pytest.raises(KeyboardInterrupt):
            _make(name).fit(blobs, run_dir=str(tmp_path / "killed"), callbacks=[Count(kill_at=10)])
        resumed_count = Count()
        resumed = _make(name).fit(blobs, run_dir=str(tmp_path / "killed"), callbacks=[resumed_count])
    torch.testing.assert_close(resumed.predict_proba(blobs.test.x), full.predict_proba(blobs.test.x), rtol=0, atol=0)
    # the resumed run did not start over: it skipped the checkpointed epoch (8 steps)
    assert resumed_count.steps == full_count.steps - 8


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
    with pytest.raises(ConfigError, match="user factory 'my_nets:make_net'; loading would import and run it"):
        ek.Ensemble.load(path)  # a file never makes ensemblekit import code on its own
    import my_nets

    for back in (ek.Ensemble.load(path, trust_factory=True), ek.Ensemble.load(path, factory=lambda: my_nets.make_net(6, num_classes=3))):
        torch.testing.assert_close(back.predict_proba(blobs.test.x), method.ensemble_.predict_proba(blobs.test.x))
    plain = ek.create_method("independent", model=lambda: torch.nn.Linear(8, 3), members=2, epochs=1, progress=False).fit(blobs)
    assert plain.predict_proba(blobs.test.x).shape == (2, len(blobs.test), 3)
