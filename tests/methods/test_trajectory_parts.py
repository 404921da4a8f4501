"""The composed parts of the trajectory methods (schedules, collection points) and of the Trainer, on hand-computed values."""

from __future__ import annotations

import inspect

import pytest
import torch

import ensemblekit as ek
from ensemblekit.errors import ConfigError
from ensemblekit.methods.fge import FGEParams
from ensemblekit.methods.swa import SWAParams
from ensemblekit.methods.trajectory import CollectionPoints, CyclicSchedule, RestartsSchedule, TrajectoryMethod
from ensemblekit.methods.varhyper import FamilyMethod
from ensemblekit.training.config import TrainConfig
from ensemblekit.training.wiring import build_optimization, stage_loss, stage_schedule

SGD = {"name": "sgd", "lr": 0.05, "momentum": 0.9}


def _train(**kw):
    return TrainConfig(**{"epochs": 3, "optimizer": SGD, "schedule": "constant", **kw})


def test_collection_points_fall_at_the_hand_computed_steps():
    # FGE: cycles of 4 after 10 iterations of pre-training, collected 2 into each cycle
    fge = CollectionPoints(period=4, start=10, offset=2)
    assert [s for s in range(1, 25) if fge(s)] == [12, 16, 20, 24] == fge.steps(24)
    assert fge.steps(11) == []
    # snapshot: a cycle of 5 from the start, collected at its end
    snap = CollectionPoints(period=5)
    assert [s for s in range(1, 18) if snap(s)] == [5, 10, 15] == snap.steps(17)
    # one point per iteration
    assert CollectionPoints(period=1).steps(3) == [1, 2, 3]
    for bad in ({"period": 0}, {"period": 4, "offset": 4}, {"period": 4, "start": -1}):
        with pytest.raises(ValueError, match="collection points need"):
            CollectionPoints(**bad)


def test_cyclic_schedule_pretrains_then_cycles_and_collects_at_cycle_middles():
    params = FGEParams(pretrain=0.5, cycle=4, a1=0.1, a2=0.001)
    sched = CyclicSchedule("fge", params, _train())
    policy = sched.policy(4)  # 3 epochs x 4 = 12 iterations; pre-training 0.5 * 12 = 6
    assert policy.total == 12 and policy.points == CollectionPoints(period=4, start=6, offset=2)
    assert policy.points.steps(12) == [8, 12] and policy.marks == [7, 11]
    # pre-training: the constant train.schedule; then the triangle: (1 - 2t) a1 + 2t a2 with t = ((step - 6) % 4 + 1) / 4
    assert [policy.lr(s) for s in (0, 5, 6, 7, 8, 9)] == pytest.approx([0.05, 0.05, 0.0505, 0.001, 0.0505, 0.1])
    assert policy.lr.__name__ == "constant(0.05) | fge_triangle(0.1, 0.001, 4)"
    # SWA's swa_lr: the same points, a constant rate after pre-training
    swa = CyclicSchedule("swa", SWAParams(pretrain=0.5, cycle=4, a1=0.1, a2=0.001, swa_lr=0.01), _train(), constant_lr=0.01).policy(4)
    assert swa.marks == [7, 11] and [swa.lr(s) for s in (5, 6, 7, 11)] == pytest.approx([0.05, 0.01, 0.01, 0.01])
    # default rates are factors of the optimizer's lr; cycle_epochs rounds to an even number of iterations
    default = CyclicSchedule("fge", FGEParams(cycle_epochs=0.6), _train())
    assert default.rates() == pytest.approx((0.1, 0.001)) and default.cycle_steps(4) == 2 and default.pretrain_steps(4) == 7


def test_cyclic_schedule_refuses_what_cannot_run():
    # a1 given, a2 the default 0.02 * lr = 0.001: only the optimizer's lr tells they are in the wrong order
    with pytest.raises(ConfigError, match=r"fge: FGE needs a1 > a2, got a1=0\.0005 and a2=0\.001"):
        CyclicSchedule("fge", FGEParams(a1=0.0005), _train()).policy(4)
    with pytest.raises(ConfigError, match=r"swa: pre-training \(12 iterations\) leaves no room for cycles in 12 iterations"):
        CyclicSchedule("swa", SWAParams(pretrain=1.0), _train()).policy(4)
    with pytest.raises(ConfigError, match="fge: no cycle middle falls within 3 epochs"):
        CyclicSchedule("fge", FGEParams(pretrain=0.5, cycle=16), _train()).check(4)
    # starting from a trained run: no pre-training, the first cycle middle after c / 2 iterations
    warm = CyclicSchedule("fge", FGEParams(cycle=4, init_from="somewhere"), _train()).policy(4)
    assert warm.marks == [1, 5, 9]


def test_restarts_schedule_collects_at_every_cycle_end():
    params = ek.methods.METHODS.get("snapshot").Params(cycles=3)
    policy = RestartsSchedule("snapshot", params, _train()).policy(4)  # 12 iterations, cycles of 4
    assert policy.points.steps(12) == [4, 8, 12] and policy.marks == [3, 7, 11]
    assert [policy.lr(s) for s in (0, 2, 4)] == pytest.approx([0.05, 0.025, 0.05])
    with pytest.raises(ConfigError, match="cycles = 20 need at least one iteration each, and the run has 12"):
        RestartsSchedule("snapshot", params.model_copy(update={"cycles": 20}), _train()).check(4)
    with pytest.raises(ConfigError, match="a cycle of 20 iterations does not fit in the run's 12 iterations"):
        RestartsSchedule("snapshot", params.model_copy(update={"cycle_epochs": 5.0}), _train()).check(4)


def test_trajectory_methods_compose_parts_instead_of_deriving_from_each_other():
    names = ("fge", "swa", "swag", "snapshot")
    classes = [ek.methods.METHODS.get(n) for n in names]
    for cls in classes:
        assert issubclass(cls, TrajectoryMethod)
        assert not any(issubclass(cls, other) for other in classes if other is not cls), cls
    # the family base names none of its subclasses or predictor kinds
    source = inspect.getsource(FamilyMethod)
    assert "isinstance" not in source and "self.name ==" not in source


def test_trainer_pieces_on_hand_values(blobs):
    cfg = _train(precision="fp16")
    lr = stage_schedule(cfg, 5, None)
    assert (lr.base_lr, lr.total_steps, lr.policy(14)) == (0.05, 15, 0.05)
    assert stage_schedule(cfg, 5, lambda step: 0.5).policy(3) == 0.5
    ens = ek.Ensemble.from_factory(lambda: torch.nn.Linear(8, 3), seeds=[0, 1])
    opt = build_optimization(ens, cfg, "train")
    assert opt.scaler is not None and len(opt.stepped) == 2  # weight and bias, stacked over both members
    assert build_optimization(ens, _train(), "train").scaler is None
    default = lambda logits, batch: logits.sum()  # noqa: E731
    assert stage_loss(ens, "train", None, None, default) is default
    with pytest.raises(ConfigError, match="train: give loss_fn or loss_for, not both"):
        stage_loss(ens, "train", default, lambda m: default, default)


@pytest.mark.parametrize("name, kwargs, first_epoch", [
    ("fge", {"cycle_epochs": 4}, "14"), ("swa", {}, "12.67"), ("swag", {}, "12.67"), ("snapshot", {"cycles": 2}, "10"),
])
def test_early_stopping_before_the_first_collection_point_is_one_clear_line(blobs, name, kwargs, first_epoch):
    method = ek.create_method(name, model={"name": "mlp", "kwargs": {"hidden": [16]}}, epochs=20, progress=False,
                              early_stopping={"patience": 1, "min_delta": 10.0}, **kwargs)  # no epoch can improve by 10
    with pytest.raises(ConfigError, match=rf"^{name}: early stopping ended the run after 2 epoch\(s\), before its first "
                                          rf"collection point \(epoch {first_epoch}\), so nothing was collected") as info:
        method.fit(blobs)
    assert "\n" not in str(info.value)
