"""Mixed precision (bf16, fp16 with per-member loss scaling), member chunks and torch.compile's fallback."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ensemblekit as ek
from ensemblekit import Ensemble
from ensemblekit.errors import ConfigError
from ensemblekit.metrics.classification import accuracy
from ensemblekit.models import model_factory
from ensemblekit.training import Trainer
from ensemblekit.training.optim import build_optimizer
from ensemblekit.training.precision import MemberLossScaler


@pytest.fixture(scope="module")
def harder() -> ek.Data:
    """5 overlapping Gaussian classes in 20-D: fp32 reaches ~85%, far from 100%."""
    rng = np.random.default_rng(1)
    centers = rng.normal(0, 1.0, size=(5, 20))
    y = np.arange(3000) % 5
    x = centers[y] + rng.normal(0, 1.3, size=(3000, 20))
    return ek.from_arrays(x[:2400], y[:2400], x[2400:], y[2400:], val_fraction=0.1, seed=0, name="harder")


def _ens(data: ek.Data, spec: dict, seeds=(0, 1, 2)) -> Ensemble:
    return Ensemble.from_factory(model_factory(spec, input_shape=data.input_shape, num_classes=data.num_classes), seeds=list(seeds))


MLP = {"name": "mlp", "kwargs": {"hidden": [64, 64], "batchnorm": True}}
CFG = {"epochs": 6, "batch_size": 64, "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9}, "schedule": "cosine",
       "data_order": "per_member", "progress": False, "device": "cpu"}


def _test_acc(ens: Ensemble, data: ek.Data) -> float:
    x, y = data.test.tensors()
    return float(accuracy(ens.predict_proba(x).mean(0), y))


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_low_precision_training_reaches_the_fp32_accuracy(harder: ek.Data, precision: str) -> None:
    ref = _test_acc(Trainer(_ens(harder, MLP), harder, CFG, seed=0).fit(), harder)
    trainer = Trainer(_ens(harder, MLP), harder, {**CFG, "precision": precision}, seed=0)
    low = trainer.fit()
    acc = _test_acc(low, harder)
    assert ref > 0.75
    assert abs(acc - ref) <= 0.01, (precision, acc, ref)
    # master weights, BatchNorm statistics and what a checkpoint holds stay fp32
    assert all(t.dtype == torch.float32 for t in low.state_tensors().values() if t.is_floating_point())
    # and the arithmetic really was lower precision: the run differs from fp32's
    ref_w = Trainer(_ens(harder, MLP), harder, {**CFG, "epochs": 1}, seed=0).fit().groups[0].params["head.weight"]
    low_w = Trainer(_ens(harder, MLP), harder, {**CFG, "epochs": 1, "precision": precision}, seed=0).fit().groups[0].params["head.weight"]
    assert not torch.allclose(ref_w, low_w, atol=1e-6)
    if precision == "fp16":
        assert "fp16_skipped" in trainer.history[0] and "loss_scale" in trainer.history[0]


def test_an_inf_in_one_members_gradient_skips_only_that_member(blobs: ek.Data) -> None:
    cfg = {**CFG, "epochs": 1, "batch_size": 48, "precision": "fp16", "data_order": "shared"}
    trainer = Trainer(_ens(blobs, {"name": "mlp", "kwargs": {"hidden": [16]}}), blobs, cfg, seed=0)
    params = trainer.model.groups[0].params
    trainer.scaler.scale = 1024.0
    calls = {"n": 0}

    def poison(grad: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] == 3:  # the third step: member 1 overflows
            grad = grad.clone()
            grad[1] = float("inf")
        return grad

    params["head.weight"].register_hook(poison)
    snapshots: list[dict[str, torch.Tensor]] = []

    class Watch(ek.training.Callback):
        def on_step_end(self, tr, step, batch):
            snapshots.append({k: v.detach().clone() for k, v in tr.model.groups[0].params.items()})
            snapshots[-1]["momentum"] = tr.optimizer.state[params["head.weight"]]["momentum_buffer"].clone()

    trainer.callbacks.append(Watch())
    trainer.fit()
    before, after = snapshots[1], snapshots[2]  # around step 3
    for k in params:
        assert torch.equal(before[k][1], after[k][1]), k  # member 1 skipped: weights unchanged
        assert not torch.equal(before[k][0], after[k][0]), k  # the others stepped
        assert not torch.equal(before[k][2], after[k][2]), k
    assert torch.equal(before["momentum"][1], after["momentum"][1])  # and its optimizer state too
    assert trainer.history[0]["fp16_skipped"] == [0, 1, 0]
    assert trainer.scaler.total_skipped == [0, 1, 0]
    assert trainer.history[0]["loss_scale"] == 512.0  # backed off once
    assert all(torch.isfinite(v).all() for v in params.values())


def test_loss_scaler_grows_after_clean_steps_and_round_trips() -> None:
    s = MemberLossScaler(2, init_scale=8.0, growth_interval=2)
    t = torch.ones(2, 3, requires_grad=True)
    opt = torch.optim.SGD([t], lr=1.0)
    for _ in range(2):
        t.grad = torch.full((2, 3), 8.0)
        bad = s.unscale_([(t, slice(0, 2))])
        assert torch.equal(t.grad, torch.ones(2, 3)) and not bad.any()
        with s.skipping(opt, [(t, slice(0, 2))], bad):
            opt.step()
    assert s.scale == 16.0
    s2 = MemberLossScaler(2)
    s2.load_state_dict(s.state_dict())
    assert s2.scale == 16.0 and s2.clean_steps == 0 and s2.member_steps() == [[2, 2]]


SKIP_OPTIMIZERS = {
    "adam": {"lr": 0.1, "betas": (0.8, 0.9)},
    "adamw": {"lr": 0.1, "betas": (0.8, 0.9), "weight_decay": 0.3},
    "adam_amsgrad_l2": {"name": "adam", "lr": 0.05, "weight_decay": 0.1, "amsgrad": True},
    "sgd_momentum": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "dampening": 0.3, "weight_decay": 0.1},
    "adagrad": {"lr": 0.2, "lr_decay": 0.1},
    "rmsprop": {"lr": 0.02, "momentum": 0.5, "centered": True},
}
# step -> members whose gradient overflows there: member 1 once mid-run (2 members), or
# member 1 on the very first step (its optimizer state does not exist yet) and member 2 twice
SKIP_PLANS = {"one_member_mid_run": (2, {3: [1]}), "first_step_and_twice": (3, {1: [1], 2: [2], 4: [2]})}


def _stacked_with_skips(spec: dict, members: int, skips: dict, xs: torch.Tensor, w0: torch.Tensor):
    """``len(xs)`` fp16-scaled steps of one stacked ``(members, 4)`` tensor, the loss of
    member m being sum((w_m * x - 1)^2); a member listed in ``skips[step]`` overflows."""
    w = w0[:members].clone().requires_grad_()
    opt = build_optimizer(spec, [w])
    scaler, stepped = MemberLossScaler(members, init_scale=2.0**10), [(w, slice(0, members))]
    for step, x in enumerate(xs, start=1):
        (((w * x - 1.0) ** 2).sum() * scaler.scale).backward()
        with torch.no_grad():
            for m in skips.get(step, []):
                w.grad[m, 0] = float("inf")
        bad = scaler.unscale_(stepped)
        with scaler.skipping(opt, stepped, bad):
            if not bool(bad.all()):
                opt.step()
        w.grad = None
    return w.detach(), opt.state[w], scaler


def _alone(spec: dict, skipped: set, xs: torch.Tensor, w0_row: torch.Tensor):
    """The same member trained on its own in fp32, simply not stepping at ``skipped``."""
    w = w0_row.clone().unsqueeze(0).requires_grad_()
    opt = build_optimizer(spec, [w])
    for step, x in enumerate(xs, start=1):
        ((w * x - 1.0) ** 2).sum().backward()
        if step not in skipped:
            opt.step()
        w.grad = None
    return w.detach(), opt.state[w]


@pytest.mark.parametrize("plan", sorted(SKIP_PLANS))
@pytest.mark.parametrize("name", sorted(SKIP_OPTIMIZERS))
def test_a_skipped_members_weights_and_optimizer_state_are_as_if_it_never_took_that_step(name: str, plan: str) -> None:
    kwargs = dict(SKIP_OPTIMIZERS[name])
    spec = {"name": kwargs.pop("name", name), **kwargs}
    members, skips = SKIP_PLANS[plan]
    gen = torch.Generator().manual_seed(0)
    xs, w0 = torch.randn(7, 4, generator=gen), torch.randn(3, 4, generator=gen)
    w, state, scaler = _stacked_with_skips(spec, members, skips, xs, w0)
    for m in range(members):
        skipped = {s for s, ms in skips.items() if m in ms}
        ref_w, ref_state = _alone(spec, skipped, xs, w0[m])
        torch.testing.assert_close(w[m:m + 1], ref_w, rtol=0, atol=1e-7, msg=lambda e, m=m: f"member {m} weights: {e}")
        for key, ref in ref_state.items():
            if torch.is_tensor(ref) and ref.shape == ref_w.shape:
                torch.testing.assert_close(state[key][m:m + 1], ref, rtol=0, atol=1e-7, msg=lambda e, m=m, key=key: f"member {m} {key}: {e}")
    taken = [7 - sum(m in ms for ms in skips.values()) for m in range(members)]  # steps each member took
    assert scaler.member_steps() == [taken] and scaler.total_skipped == [7 - n for n in taken]
    if "step" in state:  # the optimizer's own count is the leading member's
        assert int(state["step"]) == 7


def test_a_skipped_per_member_leaf_keeps_its_own_adam_step() -> None:
    """``optimizer.per_member`` gives each member leaf tensors of its own: a skip restores the whole state."""
    gen = torch.Generator().manual_seed(1)
    xs, w0 = torch.randn(5, 4, generator=gen), torch.randn(2, 4, generator=gen)
    spec = {"name": "adam", "lr": 0.1}
    leaves = [w0[m].clone().requires_grad_() for m in range(2)]
    opt = build_optimizer(spec, [{"params": [leaves[0]]}, {"params": [leaves[1]], "lr": 0.05}])
    scaler, stepped = MemberLossScaler(2, init_scale=2.0**8), [(leaves[0], 0), (leaves[1], 1)]
    for step, x in enumerate(xs, start=1):
        (sum(((w * x - 1.0) ** 2).sum() for w in leaves) * scaler.scale).backward()
        if step in (1, 3):
            leaves[1].grad[0] = float("inf")  # member 1 overflows on its first step and on the third
        bad = scaler.unscale_(stepped)
        with scaler.skipping(opt, stepped, bad):
            opt.step()
        for w in leaves:
            w.grad = None
    ref_w, ref_state = _alone({**spec, "lr": 0.05}, {1, 3}, xs, w0[1])
    torch.testing.assert_close(leaves[1].detach(), ref_w[0], rtol=0, atol=1e-7)
    torch.testing.assert_close(opt.state[leaves[1]]["exp_avg_sq"], ref_state["exp_avg_sq"][0], rtol=0, atol=1e-7)
    assert int(opt.state[leaves[1]]["step"]) == 3 and int(opt.state[leaves[0]]["step"]) == 5
    assert scaler.member_steps() == [None, None]  # leaves count for themselves


CHUNK_CASES = {
    "cnn1d_bn_per_member": ({"name": "cnn1d", "kwargs": {"channels": 4}}, {"data_order": "per_member"}, 2),
    "mlp_shared_mixup_penalty": ({"name": "mlp", "kwargs": {"hidden": [16], "batchnorm": True}},
                                 {"data_order": "shared", "mixup": 0.4, "penalties": {"l2": 1e-3}, "grad_clip": 1.0}, 1),
    "mlp_per_member_lr": ({"name": "mlp", "kwargs": {"hidden": [16]}},
                          {"data_order": "bootstrap", "optimizer": {"name": "sgd", "lr": 0.05, "per_member": {"lr": [0.05, 0.1, 0.02, 0.07]}}}, 3),
}


@pytest.mark.parametrize("case", sorted(CHUNK_CASES))
def test_member_chunks_equal_one_pass(case: str) -> None:
    spec, extra, chunk = CHUNK_CASES[case]
    rng = np.random.default_rng(0)
    shape = (1, 24) if spec["name"] == "cnn1d" else (8,)
    x = rng.normal(size=(200, *shape)).astype("float32")
    y = rng.integers(0, 3, size=200)
    data = ek.from_arrays(x[:160], y[:160], x[160:], y[160:], val_fraction=0.0, seed=0, name="toy")
    cfg = {**CFG, "epochs": 1, "batch_size": 50, "schedule": "constant", **extra}  # 160/50 -> 4 steps... 3 full + 1
    seeds = (0, 1, 2, 3)
    one = Trainer(_ens(data, spec, seeds), data, cfg, seed=5).fit()
    chunked_trainer = Trainer(_ens(data, spec, seeds), data, {**cfg, "member_chunk": chunk}, seed=5)
    chunked = chunked_trainer.fit()
    assert chunked_trainer.history[0]["member_chunk"] == chunk
    for (k, a), (_, b) in zip(one.state_tensors().items(), chunked.state_tensors().items()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=k)


def test_member_chunks_span_member_groups_of_a_heterogeneous_ensemble(blobs: ek.Data) -> None:
    make = lambda hidden: _ens(blobs, {"name": "mlp", "kwargs": {"hidden": hidden, "batchnorm": True}}, seeds=(0, 1))
    cfg = {**CFG, "epochs": 1, "batch_size": 60}
    ens = Ensemble.cat([make([8]), make([12])])
    one = Trainer(ens.clone(), blobs, cfg, seed=1).fit()
    chunked = Trainer(ens.clone(), blobs, {**cfg, "member_chunk": 3}, seed=1).fit()
    for (k, a), (_, b) in zip(one.state_tensors().items(), chunked.state_tensors().items()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=k)


def test_auto_member_chunk_probes_once_and_changes_nothing(blobs: ek.Data) -> None:
    cfg = {**CFG, "epochs": 2, "batch_size": 60}
    one = Trainer(_ens(blobs, MLP), blobs, cfg, seed=1).fit()
    trainer = Trainer(_ens(blobs, MLP), blobs, {**cfg, "member_chunk": "auto"}, seed=1)
    auto = trainer.fit()
    assert trainer.member_chunk == 3  # this tiny MLP fits many times over
    assert trainer.history[0]["member_chunk"] == 3
    for (k, a), (_, b) in zip(one.state_tensors().items(), auto.state_tensors().items()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=k)


def test_member_chunk_refuses_models_and_losses_that_read_all_members(blobs: ek.Data) -> None:
    with pytest.raises(ConfigError, match="loss computed member by member"):
        Trainer(_ens(blobs, MLP), blobs, {**CFG, "member_chunk": 1}, loss_fn=lambda logits, batch: logits.mean((1, 2)))
    from ensemblekit.efficient.batchensemble import to_batch_ensemble
    from ensemblekit.efficient.shared import SharedEnsemble

    net = to_batch_ensemble(model_factory(MLP, input_shape=blobs.input_shape, num_classes=3)(), members=3)
    shared = SharedEnsemble(net, "batch_ensemble", {"members": 3}, None)
    with pytest.raises(ConfigError, match="share parameters"):
        Trainer(shared, blobs, {**CFG, "member_chunk": 1})


def test_compile_falls_back_to_eager_with_a_warning(blobs: ek.Data, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(fn, **kwargs):
        def run(*a, **k):
            raise RuntimeError("inductor: no C++ compiler")
        return run

    monkeypatch.setattr(torch, "compile", broken)
    cfg = {**CFG, "epochs": 1, "batch_size": 60}
    ref = Trainer(_ens(blobs, MLP), blobs, cfg, seed=2).fit()
    with pytest.warns(RuntimeWarning, match="torch.compile failed"):
        out = Trainer(_ens(blobs, MLP), blobs, {**cfg, "compile": True}, seed=2).fit()
    for (k, a), (_, b) in zip(ref.state_tensors().items(), out.state_tensors().items()):
        assert torch.equal(a, b), k


def test_members_placed_on_two_devices_train_like_one_device(blobs: ek.Data, tmp_path) -> None:
    from ensemblekit.ensemble.placement import PlacedEnsemble, split_members
    from ensemblekit.training import RunDir

    assert split_members(5, 2) == [slice(0, 3), slice(3, 5)] and split_members(1, 3) == [slice(0, 1)]
    cfg = {**CFG, "epochs": 2, "batch_size": 60}
    one = Trainer(_ens(blobs, MLP), blobs, cfg, seed=4).fit()
    trainer = Trainer(_ens(blobs, MLP), blobs, {**cfg, "devices": ["cpu", "cpu"]}, seed=4, run=RunDir(tmp_path / "r"))
    assert isinstance(trainer.model, PlacedEnsemble) and [g.num_members for g in trainer.model.groups] == [2, 1]
    two = trainer.fit()
    assert type(two) is Ensemble and [g.num_members for g in two.groups] == [3]  # gathered back, base layout
    assert set(two.state_tensors()) == set(one.state_tensors())
    for (k, a), (_, b) in zip(one.state_tensors().items(), two.state_tensors().items()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=k)
    # its checkpoint holds the one-device layout and resumes as a finished stage
    again = Trainer(_ens(blobs, MLP, seeds=(7, 8, 9)), blobs, {**cfg, "devices": ["cpu", "cpu"]}, seed=4, run=RunDir(tmp_path / "r"))
    for (k, a), (_, b) in zip(two.state_tensors().items(), again.fit().state_tensors().items()):
        assert torch.equal(a, b), k
