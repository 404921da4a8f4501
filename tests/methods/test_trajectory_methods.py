"""Snapshot ensembles, FGE and SWA: collection points, averaging, BatchNorm recomputation."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import update_bn
from torch.utils.data import DataLoader, TensorDataset

import ensemblekit as ek
from ensemblekit import Ensemble
from ensemblekit.errors import ConfigError
from ensemblekit.methods.collect import Averager, Collector
from ensemblekit.models import model_factory
from ensemblekit.ensemble.bn import recompute_bn

SMALL = {"model": {"name": "mlp", "kwargs": {"hidden": [16], "batchnorm": True}}, "batch_size": 30, "progress": False,
         "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9}}


def test_fge_collects_at_every_cycle_middle_after_pretraining(blobs):
    # 240 train examples / 30 = 8 iterations per epoch; 10 epochs = 80 iterations
    fge = ek.create_method("fge", **SMALL, epochs=10, pretrain=0.5, cycle=8, a1=0.1, a2=0.001).fit(blobs)
    # pre-training: 0.5 * 10 epochs = 40 iterations; cycles of 8: middles after 44, 52, 60, 68, 76
    assert [m["step"] for m in fge.ensemble_.members_info] == [44, 52, 60, 68, 76]
    policy, marks = fge.lr_policy(8)
    assert marks == [43, 51, 59, 67, 75]
    assert [policy(s) for s in (43, 47, 48)] == pytest.approx([0.001, 0.1, 0.1 * 0.75 + 0.001 * 0.25])
    with pytest.raises(ConfigError, match="even number"):
        ek.create_method("fge", **SMALL, epochs=4, cycle=3).fit(blobs)
    with pytest.raises(ConfigError, match="a1 > a2"):
        ek.create_method("fge", **SMALL, epochs=4, a1=0.001, a2=0.01).fit(blobs)


def test_snapshot_takes_a_member_at_each_cycle_end(blobs):
    sse = ek.create_method("snapshot", **SMALL, epochs=6, cycles=3).fit(blobs)  # 48 iterations, cycles of 16
    assert [m["step"] for m in sse.ensemble_.members_info] == [16, 32, 48]
    policy, marks = sse.lr_policy(8)
    assert marks == [15, 31, 47]
    assert policy(0) == pytest.approx(0.05) and policy(16) == pytest.approx(0.05) and policy(8) == pytest.approx(0.025)
    last2 = ek.create_method("snapshot", **SMALL, epochs=6, cycles=3, keep=2).fit(blobs)
    assert [m["step"] for m in last2.ensemble_.members_info] == [32, 48]
    assert ek.methods.METHODS.get("snapshot").at_budget(3, ek.TrainConfig(epochs=30), {"cycles": 5}) == {"epochs": 90, "cycle_epochs": 6.0}


def test_collector_and_averager_against_hand_values():
    class FakeTrainer:
        steps_per_epoch = 2

        def __init__(self):
            self.ensemble = Ensemble.from_factory(lambda: nn.Linear(1, 1, bias=False), seeds=[0])

    tr = FakeTrainer()
    col, avg = Collector(lambda s: s % 2 == 0), Averager(lambda s: s % 2 == 0)
    w = tr.ensemble.groups[0].params["weight"]
    for step, value in enumerate([1.0, 2.0, 4.0, 8.0, 16.0, 32.0], start=1):
        with torch.no_grad():
            w.fill_(value)
        col.on_step_end(tr, step, None)
        avg.on_step_end(tr, step, None)
    assert [s["g0.param.weight"].item() for s in col.snapshots] == [2.0, 8.0, 32.0]
    assert avg.count == 3 and avg.apply(tr.ensemble).groups[0].params["weight"].item() == pytest.approx((2 + 8 + 32) / 3)
    restored = Averager(lambda s: True)
    restored.load_state_dict(avg.state_dict())
    assert restored.average["g0.param.weight"].item() == pytest.approx(14.0)


def test_recompute_bn_matches_torch_update_bn_for_every_member(blobs):
    factory = model_factory({"name": "mlp", "kwargs": {"hidden": [16], "batchnorm": True}}, input_shape=(8,), num_classes=3)
    ens = Ensemble.from_factory(factory, seeds=[0, 1, 2])
    modules = [m for m in ens.to_modules()]
    recompute_bn(ens, blobs.train, batch_size=50)
    loader = DataLoader(TensorDataset(blobs.train.x), batch_size=50)
    for i, module in enumerate(modules):
        update_bn(loader, module)
        for k, v in module.named_buffers():
            if "running" in k:
                torch.testing.assert_close(ens.groups[0].buffers[k][i], v, atol=1e-5, rtol=1e-5)


def test_swa_is_one_network_with_recomputed_statistics(blobs):
    swa = ek.create_method("swa", **SMALL, epochs=10, pretrain=0.5, cycle=8).fit(blobs)
    assert len(swa.ensemble_) == 1 and swa.ensemble_.members_info[0]["averaged_iterates"] == 5
    probs = swa.ensemble_.predict_proba(blobs.test.x)
    assert float((probs[0].argmax(-1) == blobs.test.y).float().mean()) > 0.8
    # the averaged weights' BatchNorm statistics are those of one pass over the training data
    # (torch's update_bn on the same weights), not the last iterate's running averages
    module = swa.ensemble_.member(0)
    last = swa.last_trainer_.model.member(0)
    # the network is the average, not the last iterate (a bias before BatchNorm gets no gradient and never moves)
    assert sum(not torch.equal(v, dict(last.named_parameters())[k]) for k, v in module.named_parameters()) == 5
    reference = copy.deepcopy(module)
    update_bn(DataLoader(TensorDataset(blobs.train.x), batch_size=256), reference)
    buffers = dict(module.named_buffers())
    for k, v in reference.named_buffers():
        if "running" in k:
            torch.testing.assert_close(buffers[k], v, atol=1e-5, rtol=1e-5)
            assert not torch.allclose(buffers[k], dict(last.named_buffers())[k], atol=1e-3)


def test_fge_starts_from_a_trained_run_with_its_optimizer_state(blobs, tmp_path):
    from ensemblekit.training import RunDir

    ek.create_method("independent", **SMALL, members=1, epochs=3).fit(blobs, run_dir=str(tmp_path / "pre"))
    state = RunDir(tmp_path / "pre").load_checkpoint("train")
    saved = state["optimizer"]["state"]
    assert saved["0"]["momentum_buffer"].abs().sum() > 0

    class Moments(ek.Callback):
        def on_train_start(self, trainer):  # after the warm start, before the first step
            self.state = {str(k): v["momentum_buffer"].clone() for k, v in trainer.optimizer.state_dict()["state"].items()}
            self.lr = trainer.optimizer.param_groups[0]["lr"]

    moments = Moments()
    fge = ek.create_method("fge", **SMALL, epochs=2, cycle=4, init_from=str(tmp_path / "pre")).fit(blobs, callbacks=[moments])
    # every momentum buffer the pre-run wrote is in FGE's optimizer when it starts; its own rate (a1) is not replaced
    assert set(moments.state) == set(saved)
    for k, buf in moments.state.items():
        assert torch.equal(buf, saved[k]["momentum_buffer"])
    assert moments.lr == pytest.approx(fge.lr_policy(8)[0](0))
    assert len(fge.ensemble_) == 4  # 16 iterations, cycles of 4, no pre-training
    first = fge.history_[0]
    assert first["train_acc"] > 0.8  # it starts from the trained weights, not from scratch
    with pytest.raises(ek.DataError, match="not a run directory"):
        ek.create_method("fge", **SMALL, epochs=2, init_from=str(tmp_path / "nowhere")).fit(blobs)
    other = {**SMALL, "model": {"name": "mlp", "kwargs": {"hidden": [7], "batchnorm": True}}}
    with pytest.raises(ek.DataError, match="shape"):
        ek.create_method("fge", **other, epochs=2, init_from=str(tmp_path / "pre")).fit(blobs)
