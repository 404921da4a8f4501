"""The Ensemble container: vmap == per-module loop, optimizer equivalence, save/load, grouping."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ensemblekit import Ensemble
from ensemblekit.errors import ConfigError
from ensemblekit.models import model_factory
from ensemblekit.training.optim import build_optimizer


def _mlp_factory():
    return model_factory({"name": "mlp", "kwargs": {"hidden": [12, 12], "batchnorm": True, "dropout": 0.3}}, input_shape=(6,), num_classes=4)


def _cnn_factory():
    return model_factory("cnn1d", input_shape=(1, 40), num_classes=10)


@pytest.mark.parametrize("make", [_mlp_factory, _cnn_factory])
def test_vmap_forward_equals_loop_in_eval_mode(make):
    factory = make()
    ens = Ensemble.from_factory(factory, seeds=[0, 1, 2])
    modules = ens.to_modules()
    x = torch.randn(5, 6) if factory.label == "mlp" else torch.randn(5, 1, 40)
    # make BatchNorm statistics differ per member so a mix-up would show
    with torch.no_grad():
        for g in ens.groups:
            for k, v in g.buffers.items():
                if k.endswith("running_mean"):
                    v.normal_()
    modules = ens.to_modules()
    out = ens.eval()(x)
    ref = torch.stack([m.eval()(x) for m in modules])
    assert out.shape == (3, 5, ref.shape[-1])
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_batchnorm_train_mode_updates_each_members_statistics():
    factory = _mlp_factory()
    ens = Ensemble.from_factory(model_factory({"name": "mlp", "kwargs": {"hidden": [12], "batchnorm": True}}, input_shape=(6,), num_classes=4), seeds=[3, 4])
    modules = ens.to_modules()
    x = torch.randn(2, 7, 6)  # a different batch per member
    out = ens.train()(x, per_member=True)
    ref = torch.stack([m.train()(x[i]) for i, m in enumerate(modules)])
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    for i, m in enumerate(modules):
        for k, v in m.named_buffers():
            torch.testing.assert_close(ens.groups[0].buffers[k][i], v)
    assert factory.label == "mlp"


def test_dropout_differs_between_members_in_training_and_not_in_eval():
    factory = model_factory({"name": "mlp", "kwargs": {"hidden": [64], "dropout": 0.5}}, input_shape=(6,), num_classes=4)
    ens = Ensemble.from_factory(factory, seeds=[0, 0])  # identical weights
    x = torch.randn(16, 6)
    out = ens.train()(x)
    assert not torch.allclose(out[0], out[1])
    out = ens.eval()(x)
    torch.testing.assert_close(out[0], out[1])


@pytest.mark.parametrize("opt", [{"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-3}, {"name": "adam", "lr": 0.01}, {"name": "adamw", "lr": 0.01, "weight_decay": 0.1}])
def test_one_stacked_optimizer_equals_independent_optimizers(opt):
    factory = _mlp_factory()
    ens = Ensemble.from_factory(factory, seeds=[0, 1, 2])
    modules = [m.eval() for m in ens.to_modules()]  # eval: no dropout randomness to match
    ens.eval()
    x, y = torch.randn(8, 6), torch.randint(0, 4, (8,))
    stacked = build_optimizer(opt, ens.parameters())
    singles = [build_optimizer(opt, m.parameters()) for m in modules]
    for _ in range(3):  # several steps so momentum / Adam moments matter
        logits = ens(x)
        loss = sum(F.cross_entropy(logits[i], y) for i in range(3))
        stacked.zero_grad()
        loss.backward()
        stacked.step()
        for m, o in zip(modules, singles):
            o.zero_grad()
            F.cross_entropy(m(x), y).backward()
            o.step()
    for i, m in enumerate(modules):
        for k, v in m.named_parameters():
            torch.testing.assert_close(ens.groups[0].params[k][i], v, atol=1e-5, rtol=1e-5)


def test_save_load_round_trip_is_exact(tmp_path):
    ens = Ensemble.from_factory(_mlp_factory(), seeds=[5, 6])
    ens.groups[0].params["head.weight"].requires_grad_(False)  # a frozen tensor keeps its flag
    path = str(tmp_path / "ens.safetensors")
    ens.save(path)
    back = Ensemble.load(path)
    assert back.members_info == [{"seed": 5}, {"seed": 6}]
    for (k, a), (_, b) in zip(ens.state_tensors().items(), back.state_tensors().items()):
        assert torch.equal(a, b), k
    assert not back.groups[0].params["head.weight"].requires_grad
    x = torch.randn(9, 6)
    assert torch.equal(ens.predict_proba(x), back.predict_proba(x))


def test_load_needs_factory_for_plain_callables_and_never_unpickles(tmp_path):
    def make():
        return nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2))

    ens = Ensemble.from_factory(make, seeds=[0, 1])
    path = str(tmp_path / "e.safetensors")
    ens.save(path)
    with pytest.raises(ConfigError, match="pass factory="):
        Ensemble.load(path)
    back = Ensemble.load(path, factory=make)
    x = torch.randn(4, 3)
    assert torch.equal(back.predict_proba(x), ens.predict_proba(x))
    assert open(path, "rb").read(8) != b"\x80\x04\x95"  # not a pickle stream


def test_heterogeneous_members_fall_back_to_groups():
    a = model_factory({"name": "mlp", "kwargs": {"hidden": [8]}}, input_shape=(6,), num_classes=4)
    b = model_factory({"name": "mlp", "kwargs": {"hidden": [8, 8]}}, input_shape=(6,), num_classes=4)
    modules = [a(), a(), b()]
    ens = Ensemble.from_modules(modules, specs=[a.spec, a.spec, b.spec])
    assert [g.num_members for g in ens.groups] == [2, 1]
    x = torch.randn(3, 6)
    ref = torch.stack([m.eval()(x) for m in modules])
    torch.testing.assert_close(ens.eval()(x), ref, atol=1e-6, rtol=1e-6)
    sub = ens.subset([2, 0])
    torch.testing.assert_close(sub.eval()(x), ref[[2, 0]], atol=1e-6, rtol=1e-6)


def test_from_factory_is_deterministic_and_members_differ():
    f = _mlp_factory()
    e1, e2 = Ensemble.from_factory(f, seeds=[1, 2]), Ensemble.from_factory(f, seeds=[1, 2])
    w1, w2 = e1.groups[0].params["head.weight"], e2.groups[0].params["head.weight"]
    assert torch.equal(w1, w2)
    assert not torch.equal(w1[0], w1[1])


def test_cat_merges_same_architecture_and_member_roundtrip():
    f = _mlp_factory()
    a, b = Ensemble.from_factory(f, seeds=[0]), Ensemble.from_factory(f, seeds=[1, 2])
    c = Ensemble.cat([a, b])
    assert len(c.groups) == 1 and len(c) == 3
    x = torch.randn(4, 6)
    torch.testing.assert_close(c.predict_proba(x)[0], a.predict_proba(x)[0])
    m = copy.deepcopy(c.member(2)).eval()
    torch.testing.assert_close(m(x).softmax(-1), c.predict_proba(x)[2], atol=1e-6, rtol=1e-6)


def test_predict_is_the_mean_of_probabilities_not_logits():
    f = _mlp_factory()
    ens = Ensemble.from_factory(f, seeds=[0, 1, 2])
    x = torch.randn(5, 6)
    torch.testing.assert_close(ens.predict(x), ens.predict_proba(x).mean(0))
    assert not torch.allclose(ens.predict(x), ens.eval()(x).mean(0).softmax(-1))
