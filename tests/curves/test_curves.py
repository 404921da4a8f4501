"""Mode-connecting curves: coefficients, exact endpoints, gradients, weight decay, training, resume, CLI."""

from __future__ import annotations

import pytest
import torch

import ensemblekit as ek
from ensemblekit.curves import (
    bezier, curve_ensemble, curve_from_ensembles, curve_points, evaluate_curve, polychain, summarize, two_model_errors,
)
from ensemblekit.errors import ConfigError
from ensemblekit.methods.curves import curve_stage_config
from ensemblekit.training.callbacks import Callback
from ensemblekit.training.config import TrainConfig
from ensemblekit.training.engine import cross_entropy_per_member

BN_MLP = {"name": "mlp", "kwargs": {"hidden": [16], "batchnorm": True}}
CNN_BN = {"name": "cnn1d", "kwargs": {"batchnorm": True, "channels": 16}}
FAST = {"epochs": 8, "batch_size": 32, "optimizer": {"name": "adam", "lr": 0.01}, "progress": False}


def _ends(data, spec=BN_MLP, epochs=8, batch_size=32):
    return ek.create_method("independent", model=spec, members=2, seed=0, **{**FAST, "epochs": epochs, "batch_size": batch_size}).fit(data).ensemble_


@pytest.fixture(scope="module")
def mnist_ends(tmp_path_factory):
    """MNIST-1D (1000 test examples) and two cnn1d networks with BatchNorm, saved to a file."""
    data = ek.load_dataset("mnist1d")
    torch.manual_seed(0)
    ens = _ends(data, spec=CNN_BN, epochs=12, batch_size=100)
    path = str(tmp_path_factory.mktemp("ends") / "ends.safetensors")
    ens.save(path)
    return data, ens, path


@pytest.mark.parametrize("t, bez, chain", [
    (0.0, [1.0, 0.0, 0.0], [1.0, 0.0, 0.0]),
    (0.25, [0.5625, 0.375, 0.0625], [0.5, 0.5, 0.0]),
    (0.5, [0.25, 0.5, 0.25], [0.0, 1.0, 0.0]),
    (1.0, [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]),
])
def test_three_point_coefficients_against_hand_values(t, bez, chain):
    assert torch.allclose(bezier(torch.tensor(t), 3), torch.tensor(bez))
    assert torch.allclose(polychain(torch.tensor(t), 3), torch.tensor(chain))


def test_four_point_coefficients_and_exact_ends():
    assert torch.allclose(bezier(torch.tensor(0.5), 4), torch.tensor([0.125, 0.375, 0.375, 0.125]))
    assert torch.allclose(polychain(torch.tensor(0.5), 4), torch.tensor([0.0, 0.5, 0.5, 0.0]))
    assert torch.allclose(polychain(torch.tensor(0.25), 4), torch.tensor([0.25, 0.75, 0.0, 0.0]))
    for fn in (bezier, polychain):
        assert torch.equal(fn(torch.tensor(0.0), 5), torch.tensor([1.0, 0, 0, 0, 0]))
        assert torch.equal(fn(torch.tensor(1.0), 5), torch.tensor([0.0, 0, 0, 0, 1]))


def test_custom_parametrization_is_used_and_a_bad_one_refused(blobs):
    ens = _ends(blobs, epochs=1)
    linear = lambda t, k: torch.stack([1 - t, t * 0, t])  # noqa: E731  (ignores the bend)
    curve = curve_from_ensembles(ens, 0, ens, 1, curve=linear)
    mid = curve.point(0.5)
    assert all(torch.allclose(mid[k], 0.5 * (curve.w0[k] + curve.w1[k])) for k in mid)
    with pytest.raises(ConfigError, match="unit vector e_0"):
        curve_from_ensembles(ens, 0, ens, 1, curve=lambda t, k: torch.full((k,), 1.0 / k))
    with pytest.raises(ConfigError, match="curve must be one of bezier, polychain"):
        curve_from_ensembles(ens, 0, ens, 1, curve="spline")


def test_endpoints_exact_and_bn_pass_keeps_their_error(mnist_ends):
    mnist, ens, _ = mnist_ends
    curve = curve_from_ensembles(ens, 0, ens, 1)
    p0, p1 = curve.point(0.0), curve.point(1.0)
    g = ens.groups[0]
    for k in p0:
        assert torch.equal(p0[k], g.params[k][0]) and torch.equal(p1[k], g.params[k][1])
    # bends start on the straight segment: the untrained Bezier curve is the line
    line = curve.line()
    for t in (0.25, 0.5, 0.8):
        a, b = curve.point(t), line.point(t)
        assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    # the BN pass replaces the running statistics by exact ones on the training data, so the
    # end points' error moves a little: within 1 point (10 of 1000 test examples)
    ev = evaluate_curve(curve, mnist, ts=[0.0, 1.0])
    own = 100 * (1 - (ens.predict_proba(mnist.test).argmax(-1) == mnist.test.y).float().mean(1))
    assert abs(ev.test_error[0] - float(own[0])) <= 1.0 + 1e-9 and abs(ev.test_error[1] - float(own[1])) <= 1.0 + 1e-9


def test_gradients_reach_the_bend_only_and_weight_decay_acts_on_phi_t(blobs):
    ens = _ends(blobs, epochs=1)
    curve = curve_from_ensembles(ens, 0, ens, 1, weight_decay=0.1).train()
    curve.fixed_t = 0.25
    x, y = blobs.train.x[:16], blobs.train.y[:16]
    batch = type("B", (), {"y": y, "per_member": False})()
    logits = curve(x)
    base = cross_entropy_per_member(logits, batch)
    total = curve.regularized(cross_entropy_per_member)(logits, batch)
    phi = curve.point(0.25)
    sq = sum(float((v.detach().double() ** 2).sum()) for v in phi.values())
    assert float((total - base).detach()) == pytest.approx(0.5 * 0.1 * sq, rel=1e-5)
    # the decay term alone: d/d theta of 0.5 wd ||phi||^2 = wd * c_1(t) * phi(t), c_1(0.25) = 0.375
    curve.last_sq_norm = sum((v * v).sum() for v in phi.values())
    decay = curve.regularized(lambda lg, b: torch.zeros(1))(logits, batch)
    decay.sum().backward()
    k = "head.weight"
    assert torch.allclose(curve.bends[0][k].grad, 0.1 * 0.375 * phi[k].detach(), atol=1e-6)
    assert all(v.grad is None and not v.requires_grad for v in [*curve.w0.values(), *curve.w1.values()])
    assert curve.parameters() == [v for v in curve.bends[0].values()]
    # weight decay is moved off the optimizer (the bends) onto phi(t)
    cfg, wd = curve_stage_config(TrainConfig(optimizer={"name": "sgd", "lr": 0.1, "weight_decay": 5e-4}, weight_decay=0.0), 3)
    assert wd == 5e-4 and cfg.optimizer["weight_decay"] == 0.0 and cfg.weight_decay == 0.0 and cfg.epochs == 3


def test_architecture_mismatch_is_refused(blobs, tmp_path):
    a = _ends(blobs, epochs=1)
    other = {"name": "mlp", "kwargs": {"hidden": [8], "batchnorm": True}}
    b = _ends(blobs, spec=other, epochs=1)
    with pytest.raises(ConfigError, match="share one architecture"):
        curve_from_ensembles(a, 0, b, 1)
    a.save(str(tmp_path / "a.safetensors"))
    b.save(str(tmp_path / "b.safetensors"))
    with pytest.raises(ConfigError, match="share one architecture"):
        ek.create_method("curve_ensemble", model=BN_MLP, endpoints=[str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors")]).fit(blobs)
    with pytest.raises(ConfigError, match="do not hold the configured model"):
        ek.create_method("curve_ensemble", model=other, endpoints=[str(tmp_path / "a.safetensors")]).fit(blobs)
    with pytest.raises(ConfigError, match="endpoint member index"):
        curve_from_ensembles(a, 0, a, 2)


def test_curve_training_lowers_the_midpoint_loss_and_ensembles_work(mnist_ends):
    data, _, path = mnist_ends
    m = ek.create_method("curve_ensemble", model=CNN_BN, seed=0, endpoints=[path], members=3, **{**FAST, "epochs": 3, "batch_size": 100}).fit(data)
    ev_curve = evaluate_curve(m.curve_, data, ts=[0.0, 0.5, 1.0])
    ev_line = evaluate_curve(m.curve_.line(), data, ts=[0.0, 0.5, 1.0])
    assert ev_curve.train_loss[1] < 0.5 * ev_line.train_loss[1]
    assert summarize(ev_curve)["barrier"] < 0.5 * summarize(ev_line)["barrier"]
    assert m.ensemble_.num_members == 3 and [i["t"] for i in m.ensemble_.members_info] == [0.0, 0.5, 1.0]
    pair = two_model_errors(ev_curve, data.test.y)
    assert pair[0] == pytest.approx(ev_curve.test_error[0]) and pair.shape == (3,)
    assert curve_ensemble(m.curve_, 1, data.train).members_info[0]["t"] == 0.5


class _Kill(Callback):
    def on_step_end(self, trainer, step, batch):
        if trainer.stage == "curve" and step == 7:
            raise KeyboardInterrupt


def test_resume_after_a_kill_gives_the_same_curve(blobs, tmp_path, monkeypatch):
    from ensemblekit.methods.curves import CurveEnsemble

    kw = dict(model=BN_MLP, seed=0, members=2, **{**FAST, "epochs": 3})
    full = ek.create_method("curve_ensemble", **kw).fit(blobs, run_dir=str(tmp_path / "a"))
    with pytest.raises(KeyboardInterrupt):
        ek.create_method("curve_ensemble", **kw).fit(blobs, run_dir=str(tmp_path / "b"), callbacks=[_Kill()])
    # the resumed run's fresh endpoints would start elsewhere: only the checkpoints make it equal
    monkeypatch.setattr(CurveEnsemble, "member_seeds", lambda self, n, label="member": [500 + i for i in range(n)])
    resumed = ek.create_method("curve_ensemble", **kw).fit(blobs, run_dir=str(tmp_path / "b"))
    for (k, a), (_, b) in zip(full.curve_.state_tensors().items(), resumed.curve_.state_tensors().items()):
        assert torch.equal(a, b), k
    for k, v in full.ensemble_.state_tensors().items():
        assert torch.equal(v, resumed.ensemble_.state_tensors()[k]), k
    other = ek.create_method("curve_ensemble", **kw).fit(blobs, run_dir=str(tmp_path / "c"))
    assert not torch.equal(other.curve_.state_tensors()["end0.features.1.weight"], full.curve_.state_tensors()["end0.features.1.weight"])


def test_points_recompute_batchnorm_per_t(blobs):
    ens = _ends(blobs, epochs=2)
    curve = curve_from_ensembles(ens, 0, ens, 1)
    pts = curve_points(curve, [0.0, 0.5], blobs.train)
    mean = pts.groups[0].buffers["features.1.running_mean"] if "features.1.running_mean" in pts.groups[0].buffers else next(
        v for k, v in pts.groups[0].buffers.items() if k.endswith("running_mean"))
    assert not torch.allclose(mean[0], mean[1])
    with pytest.raises(ConfigError, match=r"t values in \[0, 1\]"):
        curve.points([1.5])


def test_cli_curve_runs_end_to_end(tmp_path):
    from ensemblekit.cli import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: {name: mnist1d, num_samples: 300}\nmodel: {name: mlp, kwargs: {hidden: [16]}}\n"
                   "train: {epochs: 1, batch_size: 50, progress: false}\ncurves: [bezier]\nmembers: 2\ngrid: 3\n")
    with pytest.raises(SystemExit) as exc:
        main(["curve", str(cfg), "--run-dir", str(tmp_path / "run")])
    assert exc.value.code == 0
    assert (tmp_path / "run" / "curve_metrics.png").exists() and (tmp_path / "run" / "curve_two_model.png").exists()
    with pytest.raises(SystemExit) as exc:
        main(["curve", str(cfg), "--set", "grid=5", "--run-dir", str(tmp_path / "run")])
    assert exc.value.code == 2
