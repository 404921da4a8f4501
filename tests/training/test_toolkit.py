"""Training toolkit: penalties, decoupled weight decay, per-member learning rates, early stopping."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ensemblekit as ek
from ensemblekit import Ensemble
from ensemblekit.errors import ConfigError
from ensemblekit.models import model_factory
from ensemblekit.training import Trainer
from ensemblekit.training.config import PenaltyConfig
from ensemblekit.training.penalties import (
    elastic_net_penalty, l1_penalty, l2_penalty, member_penalties, weight_elimination_penalty,
)

W = torch.tensor([[1.0, -2.0], [0.5, 0.0]])


def test_penalties_against_hand_values():
    assert float(l2_penalty(W, 0.1)) == pytest.approx(0.05 * 5.25)            # 0.1/2 * (1 + 4 + 0.25)
    assert float(l1_penalty(W, 0.1)) == pytest.approx(0.35)                    # 0.1 * 3.5
    assert float(elastic_net_penalty(W, 0.1, 0.5)) == pytest.approx(0.30625)  # 0.1 * (0.5*3.5 + 0.25*5.25)
    assert float(weight_elimination_penalty(W, 1.0, 1.0)) == pytest.approx(1.5)  # 1/2 + 4/5 + 0.25/1.25 + 0
    assert float(weight_elimination_penalty(W, 1.0, 2.0)) == pytest.approx(0.2 + 0.5 + 0.25 / 4.25)


def test_member_penalties_per_member_and_weights_only():
    def make():
        return nn.Linear(2, 1)

    ens = Ensemble.from_factory(make, seeds=[0, 1])
    with torch.no_grad():
        ens.groups[0].params["weight"].copy_(torch.tensor([[[1.0, -2.0]], [[0.5, 0.0]]]))
        ens.groups[0].params["bias"].fill_(3.0)
    only_w = member_penalties(ens, PenaltyConfig(l2=0.1, apply_to="weights"))
    torch.testing.assert_close(only_w, torch.tensor([0.25, 0.0125]))
    with_b = member_penalties(ens, PenaltyConfig(l2=0.1, l1=0.1))
    torch.testing.assert_close(with_b, torch.tensor([0.25 + 0.45 + 0.3 + 0.3, 0.0125 + 0.45 + 0.05 + 0.3]))
    we = member_penalties(ens, PenaltyConfig(weight_elimination={"strength": 1.0, "w0": 1.0}, apply_to="weights"))
    torch.testing.assert_close(we, torch.tensor([1.3, 0.2]))


def _linear_ensemble(data, seeds):
    return Ensemble.from_factory(model_factory({"name": "mlp", "kwargs": {"hidden": []}}, input_shape=data.input_shape, num_classes=data.num_classes), seeds=seeds)


def test_decoupled_weight_decay_and_l2_penalty_are_different_and_exact(blobs):
    full = len(blobs.train)
    base = {"epochs": 1, "batch_size": full, "schedule": "constant", "progress": False}
    ens0 = _linear_ensemble(blobs, [0])
    w0 = ens0.groups[0].params["head.weight"][0].detach().clone()
    b0 = ens0.groups[0].params["head.bias"][0].detach().clone()
    w = w0.clone().requires_grad_()
    loss = F.cross_entropy(blobs.train.x @ w.T + b0, blobs.train.y)
    (g,) = torch.autograd.grad(loss, w)
    wd = Trainer(ens0.clone(), blobs, {**base, "optimizer": {"name": "sgd", "lr": 0.1}, "weight_decay": 0.5}).fit()
    torch.testing.assert_close(wd.groups[0].params["head.weight"][0], w0 * (1 - 0.1 * 0.5) - 0.1 * g, atol=1e-6, rtol=1e-5)
    l2 = Trainer(ens0.clone(), blobs, {**base, "optimizer": {"name": "sgd", "lr": 0.1}, "penalties": {"l2": 0.5, "apply_to": "weights"}}).fit()
    torch.testing.assert_close(l2.groups[0].params["head.weight"][0], w0 - 0.1 * (g + 0.5 * w0), atol=1e-6, rtol=1e-5)
    adam_wd = Trainer(ens0.clone(), blobs, {**base, "optimizer": {"name": "adam", "lr": 0.1}, "weight_decay": 0.5}).fit()
    adam_l2 = Trainer(ens0.clone(), blobs, {**base, "optimizer": {"name": "adam", "lr": 0.1}, "penalties": {"l2": 0.5}}).fit()
    assert not torch.allclose(adam_wd.groups[0].params["head.weight"], adam_l2.groups[0].params["head.weight"])


def test_per_member_learning_rates_follow_the_schedule_each_from_its_own_rate(blobs):
    lrs = [0.1, 0.01, 0.001]
    full = len(blobs.train)
    cfg = {"epochs": 4, "batch_size": full, "schedule": "cosine", "progress": False,
           "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "per_member": {"lr": lrs}}}
    ens = _linear_ensemble(blobs, [0, 1, 2])
    modules = ens.to_modules()
    trained = Trainer(ens, blobs, cfg).fit()
    for m, (module, lr) in enumerate(zip(modules, lrs)):
        opt = torch.optim.SGD(module.parameters(), lr=lr, momentum=0.9)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / 4)))
        for _ in range(4):
            opt.zero_grad()
            F.cross_entropy(module(blobs.train.x), blobs.train.y).backward()
            opt.step()
            sched.step()
        for k, v in module.named_parameters():
            torch.testing.assert_close(trained.groups[0].params[k][m], v, atol=1e-5, rtol=1e-5)
    with pytest.raises(ConfigError, match=r"per_member.lr must list one value per member \(3\)"):
        Trainer(_linear_ensemble(blobs, [0, 1, 2]), blobs, {**cfg, "optimizer": {"name": "sgd", "lr": 0.1, "per_member": {"lr": [0.1, 0.2]}}})


def test_early_stopping_stops_and_restores_each_members_best_weights(blobs):
    cfg = {"epochs": 60, "batch_size": 32, "schedule": "constant", "progress": False,
           "optimizer": {"name": "adam", "lr": 0.05}, "early_stopping": {"patience": 3, "metric": "val_nll"}}
    factory = model_factory({"name": "mlp", "kwargs": {"hidden": [64, 64]}}, input_shape=blobs.input_shape, num_classes=3)
    trainer = Trainer(Ensemble.from_factory(factory, seeds=[0, 1]), blobs, cfg)
    ens = trainer.fit()
    assert len(trainer.history) < 60
    record = trainer.history[-1]["early_stopping"]
    assert record["stopped"]
    best = record["best_epoch"]
    probs = ens.predict_proba(blobs.val)
    member_nll = ek.metrics.nll(probs, blobs.val.y)
    for m in range(2):
        logged = trainer.history[best[m] - 1]["val_member_nll"][m]
        assert float(member_nll[m]) == pytest.approx(logged, abs=1e-5)
        assert logged == pytest.approx(min(h["val_member_nll"][m] for h in trainer.history), abs=1e-9)


def test_augmentation_mixup_tta_and_dropconnect_train_end_to_end(tmp_path):
    data = ek.load_dataset("digits")
    common = dict(members=2, epochs=3, batch_size=64, optimizer={"name": "adam", "lr": 0.01}, progress=False,
                  augment=["hflip", {"name": "crop", "padding": 1}, {"name": "cutout", "size": 2}], data_order="per_member")
    model = {"name": "cnn2d", "kwargs": {"channels": [8]}, "dropconnect": 0.1}
    method = ek.create_method("independent", model=model, mixup=0.2, tta=["identity", "hflip"], **common).fit(data, run_dir=str(tmp_path))
    assert method.history_[-1]["val_acc"] > 0.6  # 0.70 (member loop) / 0.73 (vmap) after 3 epochs; chance is 0.1
    assert "module.weight" in " ".join(method.ensemble_.groups[0].params)
    # TTA: the logged validation NLL is that of the average over the image and its mirror, not of the image alone
    x, y = data.val.tensors()
    ens = method.ensemble_
    by_hand = ((ens.predict_proba(x) + ens.predict_proba(x.flip(-1))) / 2).mean(0)
    logged = method.history_[-1]["val_nll"]
    assert logged == pytest.approx(float(F.nll_loss(by_hand.log(), y)), rel=1e-5)
    assert logged != pytest.approx(float(F.nll_loss(ens.predict_proba(x).mean(0).log(), y)), rel=1e-3)
    # mixup: the same run without it (same seeds, same augmentations) sees other training losses from the first epoch
    plain = ek.create_method("independent", model=model, tta=["identity", "hflip"], **common).fit(data)
    assert plain.history_[0]["train_loss"] < method.history_[0]["train_loss"]  # mixed targets are harder to fit
    path = str(tmp_path / "e.safetensors")
    method.ensemble_.save(path)
    back = ek.Ensemble.load(path)  # the DropConnect wrapper is rebuilt from the spec
    torch.testing.assert_close(back.predict_proba(data.test.x), method.ensemble_.predict_proba(data.test.x))
    with pytest.raises(ek.DataError, match="shift needs signal examples"):
        ek.create_method("independent", model="cnn2d", augment=[{"name": "shift"}], epochs=1).fit(data)
