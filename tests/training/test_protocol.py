"""The trainable-model protocol: a network whose members share parameters trains on the engine,
with per-member clipping, penalties and learning rates meaning what the protocol says."""

from __future__ import annotations

import copy
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F

import ensemblekit as ek
from ensemblekit import Ensemble
from ensemblekit.errors import ConfigError
from ensemblekit.models import model_factory
from ensemblekit.serialization import copy_state_
from ensemblekit.training import Trainer
from ensemblekit.training.config import PenaltyConfig
from ensemblekit.evaluation.forward import predictive
from ensemblekit.training.layout import ParamLayout
from ensemblekit.training.penalties import member_penalties
from ensemblekit.training.protocol import ParamGroup, TrainableModel, check_trainable


class SharedTrunk:
    """One trunk shared by M members, each with its own linear head (weight and bias in two groups)."""

    def __init__(self, d: int, h: int, c: int, m: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.trunk = OrderedDict(weight=(0.3 * torch.randn(h, d, generator=g)).requires_grad_(), bias=torch.zeros(h, requires_grad=True))
        self.head_w = OrderedDict(weight=(0.3 * torch.randn(m, c, h, generator=g)).requires_grad_())
        self.head_b = OrderedDict(bias=torch.zeros(m, c, requires_grad=True))
        self.m, self.training = m, True

    @property
    def num_members(self) -> int:
        return self.m

    @property
    def device(self) -> torch.device:
        return self.trunk["weight"].device

    def param_groups(self) -> list[ParamGroup]:
        return [ParamGroup("trunk", self.trunk), ParamGroup("head_w", self.head_w, members=slice(0, self.m)),
                ParamGroup("head_b", self.head_b, members=slice(0, self.m))]

    def __call__(self, x, per_member=False, params=None):
        trunk, hw, hb = params if params is not None else (self.trunk, self.head_w, self.head_b)
        h = F.relu(F.linear(x, trunk["weight"], trunk["bias"]))  # (B, H) or (M, B, H)
        eq = "mbh,mch->mbc" if per_member else "bh,mch->mbc"
        return torch.einsum(eq, h, hw["weight"]) + hb["bias"][:, None, :]

    def train(self, mode=True):
        self.training = mode
        return self

    def eval(self):
        return self.train(False)

    def to(self, device):
        return copy.deepcopy(self)

    def state_tensors(self):
        return {**{f"trunk.{k}": v for k, v in self.trunk.items()}, "head.weight": self.head_w["weight"], "head.bias": self.head_b["bias"]}

    def load_state_tensors(self, tensors):
        copy_state_(self.state_tensors(), tensors)

    def member_slices(self):
        return {k: (None if k.startswith("trunk") else slice(0, self.m)) for k in self.state_tensors()}

    def logits(self, x):
        return self(x)


def test_a_shared_parameter_model_follows_the_protocol_and_trains(blobs):
    model = SharedTrunk(8, 6, 3, m=4)
    assert isinstance(model, TrainableModel)
    check_trainable(model)
    trainer = Trainer(model, blobs, {"epochs": 5, "batch_size": 32, "optimizer": {"name": "adam", "lr": 0.05}, "progress": False})
    trained = trainer.fit()
    assert predictive(trained, blobs.test.x).probs.shape == (4, len(blobs.test), 3)
    assert trainer.history[-1]["train_loss"] < trainer.history[0]["train_loss"]
    assert trainer.history[-1]["val_acc"] > 0.8
    # the cost counts the trunk once and every head: 6x8 + 6 trunk, 4 x (3x6 + 3) heads
    assert trainer.cost()["flops"] > 0 and trainer.cost()["parameters"] == 6 * 8 + 6 + 4 * 3 * 6 + 4 * 3
    with pytest.raises(ConfigError, match="lacks"):
        check_trainable(object())


def test_per_member_clipping_clips_each_member_and_the_shared_trunk_apart():
    model = SharedTrunk(2, 2, 2, m=2)
    layout = ParamLayout(model, {})
    model.trunk["weight"].grad = torch.full((2, 2), 3.0)  # norm 6
    model.trunk["bias"].grad = torch.zeros(2)
    # member 0: weight grad norm 3 (the 4 entries 1.5), bias 4 -> norm 5; member 1: norm 0.5
    model.head_w["weight"].grad = torch.stack([torch.full((2, 2), 1.5), torch.full((2, 2), 0.25)])
    model.head_b["bias"].grad = torch.tensor([[4.0, 0.0], [0.0, 0.0]])
    layout.clip(1.0)
    torch.testing.assert_close(model.trunk["weight"].grad, torch.full((2, 2), 3.0 / (6 + 1e-6)))
    torch.testing.assert_close(model.head_w["weight"].grad[0], torch.full((2, 2), 1.5 / (5 + 1e-6)))
    torch.testing.assert_close(model.head_b["bias"].grad[0], torch.tensor([4.0 / (5 + 1e-6), 0.0]))
    torch.testing.assert_close(model.head_w["weight"].grad[1], torch.full((2, 2), 0.25))  # below the limit: untouched


def test_penalties_charge_each_member_its_head_and_the_trunk_once():
    model = SharedTrunk(2, 2, 2, m=2)
    with torch.no_grad():
        model.trunk["weight"].fill_(1.0)  # sum w^2 = 4
        model.trunk["bias"].zero_()
        model.head_w["weight"].copy_(torch.stack([torch.full((2, 2), 1.0), torch.full((2, 2), 2.0)]))  # 4, 16
        model.head_b["bias"].zero_()
    pen = member_penalties(model, PenaltyConfig(l2=0.2))
    # 0.1 * own head + 0.1 * trunk / M: the sum over members charges the trunk once
    torch.testing.assert_close(pen, torch.tensor([0.1 * 4 + 0.1 * 4 / 2, 0.1 * 16 + 0.1 * 4 / 2]))


def test_per_member_learning_rates_step_each_head_at_its_rate_and_the_trunk_at_the_base_rate(blobs):
    model = SharedTrunk(8, 4, 3, m=2)
    before = {k: v.detach().clone() for k, v in model.state_tensors().items()}
    cfg = {"epochs": 1, "batch_size": 240, "optimizer": {"name": "sgd", "lr": 0.1, "per_member": {"lr": [0.1, 0.01]}},
           "schedule": "constant", "progress": False}
    grads = {}

    class Grab(ek.Callback):
        def on_step_end(self, trainer, step, batch):  # gradients of the one step, per leaf
            leaves = trainer.layout.leaves
            grads["trunk"] = trainer.model.trunk["weight"].grad.clone()
            grads["head0"] = leaves[1][0]["weight"].grad.clone()
            grads["head1"] = leaves[1][1]["weight"].grad.clone()

    trained = Trainer(model, blobs, cfg, callbacks=[Grab()]).fit()
    after = trained.state_tensors()
    torch.testing.assert_close(after["trunk.weight"], before["trunk.weight"] - 0.1 * grads["trunk"])
    torch.testing.assert_close(after["head.weight"][0], before["head.weight"][0] - 0.1 * grads["head0"])
    torch.testing.assert_close(after["head.weight"][1], before["head.weight"][1] - 0.01 * grads["head1"])


def test_what_shared_tensors_rule_out_is_refused_with_a_reason(blobs):
    with pytest.raises(ConfigError, match="early_stopping restores each member's own best weights.*shared by its members"):
        Trainer(SharedTrunk(8, 4, 3, m=2), blobs, {"epochs": 1, "early_stopping": {"patience": 1}})

    class AllShared(SharedTrunk):
        def param_groups(self):
            return [ParamGroup("all", OrderedDict(**self.trunk, hw=self.head_w["weight"], hb=self.head_b["bias"]))]

    with pytest.raises(ConfigError, match="optimizer.per_member needs per-member parameters"):
        Trainer(AllShared(8, 4, 3, m=2), blobs, {"epochs": 1, "optimizer": {"name": "sgd", "lr": 0.1, "per_member": {"lr": [0.1, 0.2]}}})

    class SelfRegularised(SharedTrunk):  # like a curve, whose decay acts on phi(t), not on its bends
        def param_groups(self):
            return [ParamGroup(g.name, g.params, g.members, regularized=False) for g in super().param_groups()]

    with pytest.raises(ConfigError, match="train.penalties do not apply to SelfRegularised"):
        Trainer(SelfRegularised(8, 4, 3, m=2), blobs, {"epochs": 1, "penalties": {"l2": 0.1}})


def test_an_ensemble_describes_its_groups_by_member_slices():
    a = model_factory({"name": "mlp", "kwargs": {"hidden": [4]}}, input_shape=(8,), num_classes=3)
    b = model_factory({"name": "mlp", "kwargs": {"hidden": [5]}}, input_shape=(8,), num_classes=3)
    ens = Ensemble.cat([Ensemble.from_factory(a, seeds=[0, 1]), Ensemble.from_factory(b, seeds=[2, 3, 4])])
    assert [g.members for g in ens.param_groups()] == [slice(0, 2), slice(2, 5)]
    slices = ens.member_slices()
    assert set(slices) == set(ens.state_tensors()) and None not in slices.values()
    moved = ens.to("cpu")
    assert moved is not ens and all(moved.state_tensors()[k] is not v for k, v in ens.state_tensors().items())
