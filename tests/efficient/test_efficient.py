"""The parameter-sharing ensembles against hand values and reference layers: BatchEnsemble,
Packed-Ensembles, MIMO, Masksembles, MC-dropout, SWAG."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

import ensemblekit as ek
from ensemblekit import Ensemble
from ensemblekit.efficient.batchensemble import to_batch_ensemble
from ensemblekit.efficient.masksembles import generate_masks
from ensemblekit.efficient.mimo import to_mimo
from ensemblekit.efficient.swag import SWAGCollector, swag_samples
from ensemblekit.errors import ConfigError
from ensemblekit.models import create_model, model_factory


def test_batch_ensemble_with_unit_factors_is_the_base_layer_for_every_member():
    torch.manual_seed(0)
    base = nn.Sequential(nn.Conv1d(2, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 7, 3))
    net = to_batch_ensemble(base, members=3)
    with torch.no_grad():
        for layer in (net.body[0], net.body[3]):
            layer.r.fill_(1.0)
            layer.s.fill_(1.0)
    x = torch.randn(5, 2, 7)
    out = net(x)
    assert out.shape == (3, 5, 3)
    for m in range(3):
        torch.testing.assert_close(out[m], base(x))
    # random-sign factors make the members differ; per-member inputs run each member on its own batch
    fresh = to_batch_ensemble(base, members=3)
    assert set(fresh.body[0].r.unique().tolist()) <= {-1.0, 1.0}
    per = fresh(torch.stack([x, x, x]), per_member=True)
    torch.testing.assert_close(per, fresh(x))
    assert not torch.allclose(per[0], per[1])


def test_batch_ensemble_factor_count_decay_option_and_refusals():
    base = create_model("mlp", input_shape=(8,), num_classes=3, hidden=[16])
    net = to_batch_ensemble(base, members=4, decay_factors=False)
    shared = sum(p.numel() for p in base.parameters() if p.dim() == 2)  # the two weight matrices
    per_member = (8 + 16 + 16) + (16 + 3 + 3)  # r, s, bias of each layer
    assert sum(p.numel() for p in net.parameters()) == shared + 4 * per_member
    from ensemblekit.efficient.shared import SharedEnsemble
    from ensemblekit.training.layout import ParamLayout

    groups = ParamLayout(SharedEnsemble(net, "batch_ensemble", {}, None), {}).optimizer_params()
    assert [g.get("weight_decay") for g in groups] == [None, 0.0]  # the factors sit in an undecayed group
    assert {id(t) for t in groups[1]["params"]} == {id(net.body.features[1].r), id(net.body.features[1].s), id(net.body.head.r), id(net.body.head.s)}
    with pytest.raises(ConfigError, match="cannot convert layer '0' \\(Conv3d\\)"):
        to_batch_ensemble(nn.Sequential(nn.Conv3d(1, 2, 3)), members=2)


def test_a_packed_layer_is_m_independent_layers_placed_block_diagonally():
    # the stacked members of a packed model run each convolution as one grouped convolution:
    # it equals the block-diagonal layer, outputs and gradients
    torch.manual_seed(0)
    members = [nn.Conv1d(3, 5, 3, padding=1) for _ in range(4)]
    ens = Ensemble.from_modules([nn.Sequential(c) for c in members])
    block = nn.Conv1d(12, 20, 3, padding=1, groups=4)
    with torch.no_grad():
        block.weight.copy_(torch.cat([c.weight for c in members]))
        block.bias.copy_(torch.cat([c.bias for c in members]))
    x = torch.randn(4, 6, 3, 9)  # one input per member
    out = ens(x, per_member=True)
    ref = block(x.transpose(0, 1).reshape(6, 12, 9)).reshape(6, 4, 5, 9).transpose(0, 1)
    torch.testing.assert_close(out, ref)
    out.pow(2).sum().backward()
    ref.pow(2).sum().backward()
    torch.testing.assert_close(ens.groups[0].params["0.weight"].grad.reshape(20, 3, 3), block.weight.grad)


def test_packed_widths_alpha_over_m_and_refusals():
    factory = model_factory({"name": "cnn1d", "packed": {"alpha": 2, "members": 4, "gamma": 2}}, input_shape=(1, 40), num_classes=10)
    net = factory()
    convs = [m for m in net.modules() if isinstance(m, nn.Conv1d)]
    assert [(c.in_channels, c.out_channels, c.groups) for c in convs] == [(1, 16, 1), (16, 16, 2), (16, 16, 2)]
    assert net.head.out_features == 10 and net(torch.randn(2, 1, 40)).shape == (2, 10)
    with pytest.raises(ConfigError, match="packed: layer 'features.0' has 32 channels/features; times alpha/members = 0.3"):
        model_factory({"name": "cnn1d", "packed": {"alpha": 1, "members": 3}}, input_shape=(1, 40), num_classes=10)


def test_mimo_with_one_member_is_the_base_model_and_heads_read_their_own_inputs():
    torch.manual_seed(0)
    base = create_model("cnn1d", input_shape=(1, 40), num_classes=10)
    base.eval()
    x = torch.randn(6, 1, 40)
    one = to_mimo(base, members=1).eval()
    torch.testing.assert_close(one(x)[0], base(x))
    three = to_mimo(base, members=3).eval()
    assert three.body.features[0].in_channels == 3 and three.body.head.out_features == 30
    out = three(x)
    assert out.shape == (3, 6, 10)
    torch.testing.assert_close(three(torch.stack([x, x, x]), per_member=True), out)  # the same input to every head at test time
    # input repetition: the repeated examples' labels follow them
    train = to_mimo(base, members=2, input_repetition=0.99, batch_repetition=2).train()
    y = torch.arange(12).reshape(2, 6)
    train(torch.randn(2, 6, 1, 40), per_member=True)
    t = train.targets(y)
    assert t.shape == (2, 12) and (t[0] == t[1]).float().mean() > 0.8


@pytest.mark.parametrize("scale", [1.5, 2.0, 3.0])
def test_masksembles_masks_have_the_requested_overlap(scale):
    masks = generate_masks(256, members=4, scale=scale, seed=0)
    assert masks.shape == (4, 256) and bool(masks.any(0).all())  # every channel used by some member
    ones = masks.sum(1)
    assert bool((ones == ones[0]).all())  # each mask keeps as many channels
    ious = [float((masks[a] * masks[b]).sum() / ((masks[a] + masks[b]) > 0).sum()) for a, b in itertools.combinations(range(4), 2)]
    assert sum(ious) / len(ious) == pytest.approx(1 / (2 * scale - 1), abs=0.04)
    assert torch.equal(generate_masks(16, 3, 1.0), torch.ones(3, 16))  # scale 1: identical full masks
    with pytest.raises(ConfigError, match="scale must be >= 1"):
        generate_masks(16, 3, 0.5)


def test_mc_dropout_without_dropout_gives_identical_members(blobs):
    common = {"model": {"name": "mlp", "kwargs": {"hidden": [16]}}, "epochs": 1, "batch_size": 32, "progress": False}
    still = ek.create_method("mc_dropout", p=0.0, members=3, **{**common, "model": {"name": "mlp", "kwargs": {"hidden": [16], "dropout": 0.0}}})
    with pytest.raises(ConfigError, match="needs dropout"):
        still.fit(blobs)
    off = ek.create_method("mc_dropout", members=3, p=1e-9, **common).fit(blobs)  # dropout layers, p ~ 0
    probs = off.predict_proba(blobs.test.x)
    torch.testing.assert_close(probs[0], probs[1])
    torch.testing.assert_close(probs[1], probs[2])
    on = ek.create_method("mc_dropout", members=3, p=0.5, **common).fit(blobs)
    a, b = on.predict_proba(blobs.test.x), on.predict_proba(blobs.test.x)
    assert torch.equal(a, b) and not torch.allclose(a[0], a[1])  # fixed passes, different members


def test_swag_moments_on_a_hand_made_trajectory_and_a_zero_scale_sample_is_the_mean():
    col = SWAGCollector(lambda step: True, rank=3)
    for value in ([1.0, 2.0], [3.0, 2.0], [2.0, 6.0], [6.0, 2.0]):  # one member, two weights, 4 steps
        col.collect({"w": torch.tensor([value])})
    torch.testing.assert_close(col.mean["w"], torch.tensor([[3.0, 3.0]], dtype=torch.float64))
    # mean of squares: (1 + 9 + 4 + 36) / 4 = 12.5 and (4 + 4 + 36 + 4) / 4 = 12
    torch.testing.assert_close(col.variance()["w"], torch.tensor([[12.5 - 9.0, 12.0 - 9.0]], dtype=torch.float64))
    # the last 3 deviations, each from the running mean after its step: means (2, 2), (2, 10/3), (3, 3)
    torch.testing.assert_close(torch.stack([d["w"][0] for d in col.deviations]),
                               torch.tensor([[1.0, 0.0], [0.0, 6 - 10 / 3], [3.0, -1.0]], dtype=torch.float64))
    draws = swag_samples(col, 2, 0.0, torch.Generator().manual_seed(0), members=1)
    assert all(torch.equal(d["w"], torch.tensor([[3.0, 3.0]])) for d in draws)
    restored = SWAGCollector(lambda s: True, rank=3)
    restored.load_state_dict(col.state_dict())
    assert restored.count == 4 and torch.equal(restored.variance()["w"], col.variance()["w"])



def _hand_collector(mean: torch.Tensor, var: torch.Tensor, deviations: list[torch.Tensor]) -> SWAGCollector:
    """A collector holding exactly ``mean``, the diagonal ``var`` and the deviations ``D``."""
    col = SWAGCollector(lambda step: True, rank=len(deviations))
    col.load_state_dict({"mean": {"w": mean}, "sq_mean": {"w": mean.pow(2) + var}, "count": 10,
                         "deviations": {str(j): {"w": d} for j, d in enumerate(deviations)}, "kept": len(deviations)})
    return col


def _five_sigma(target: torch.Tensor, n: int) -> torch.Tensor:
    """5 standard errors of a sample covariance of n Gaussian draws, Var(S_ij) = (Σ_ij² + Σ_ii Σ_jj) / n."""
    d = target.diagonal()
    return 5 * ((target.pow(2) + d[:, None] * d[None, :]) / n).sqrt()


def test_swag_scale_multiplies_the_low_rank_covariance():
    # Maddox et al. 2019: θ = θ̄ + √scale · D z2 / √(2(K − 1)), so Cov θ = scale · D Dᵀ / (2(K − 1))
    d_cols = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 1.0], [-1.0, 1.0, 0.0], [2.0, -1.0, 1.0]], dtype=torch.float64)
    mean = torch.tensor([[1.0, -2.0, 0.5]], dtype=torch.float64)
    col = _hand_collector(mean, torch.zeros(1, 3, dtype=torch.float64), [c.reshape(1, 3) for c in d_cols])
    scale, n, k = 0.25, 20000, 4
    w = torch.stack([d["w"][0].double() for d in swag_samples(col, n, scale, torch.Generator().manual_seed(0), members=1)])
    # D Dᵀ = Σ_j c_j c_jᵀ by hand: diagonal 1+0+1+4, 0+1+1+1, 4+1+0+1; (0,1) 0+0-1-2,
    # (0,2) 2+0+0+2, (1,2) 0+1+0-1; then · 0.25 / (2 · 3)
    target = scale * torch.tensor([[6.0, -3.0, 4.0], [-3.0, 3.0, 0.0], [4.0, 0.0, 6.0]], dtype=torch.float64) / (2 * (k - 1))
    torch.testing.assert_close(d_cols.T @ d_cols * scale / (2 * (k - 1)), target)
    cov = torch.cov(w.T)
    assert ((cov - target).abs() <= _five_sigma(target, n) + 1e-12).all(), (cov, target)  # the old scale² gave a quarter
    assert ((w.mean(0) - mean[0]).abs() <= 5 * (target.diagonal() / n).sqrt()).all()


def test_swag_scale_multiplies_the_diagonal_variance():
    # with D = 0: θ = θ̄ + √scale · Σ_diag^{1/2} z1 / √2, so Var θ = scale · Σ_diag / 2, per member
    mean = torch.tensor([[0.0, 1.0, 2.0], [3.0, -1.0, 0.0]], dtype=torch.float64)
    var = torch.tensor([[0.5, 2.0, 0.1], [1.0, 4.0, 0.25]], dtype=torch.float64)
    col = _hand_collector(mean, var, [torch.zeros(2, 3, dtype=torch.float64)] * 3)
    scale, n = 0.25, 20000
    w = torch.stack([d["w"].double() for d in swag_samples(col, n, scale, torch.Generator().manual_seed(1), members=2)])
    target = scale * var / 2  # (0.0625, 0.25, 0.0125) and (0.125, 0.5, 0.03125)
    torch.testing.assert_close(target[0], torch.tensor([0.0625, 0.25, 0.0125], dtype=torch.float64))
    sample_var = w.var(0)
    assert ((sample_var - target).abs() <= 5 * (2 / n) ** 0.5 * target).all(), (sample_var, target)  # old: scale² · var / 2
    assert ((w.mean(0) - mean).abs() <= 5 * (target / n).sqrt()).all()


def test_multiswag_samples_every_run_and_recomputes_batchnorm(blobs):
    m = ek.create_method("swag", model={"name": "mlp", "kwargs": {"hidden": [16], "batchnorm": True}}, epochs=6, batch_size=30,
                         pretrain=0.5, cycle=8, samples=3, runs=2, progress=False).fit(blobs)
    assert len(m.ensemble_) == 6 and [i["run"] for i in m.ensemble_.members_info] == [0, 1, 0, 1, 0, 1]
    means = m.ensemble_.groups[0].buffers["features.2.running_mean"]
    assert not torch.allclose(means[0], means[2])  # each sample got its own statistics
    acc = float((m.predict_proba(blobs.test.x).mean(0).argmax(-1) == blobs.test.y).float().mean())
    assert acc > 0.8


MODELS = [("mlp", {"hidden": [16]}, (8,)), ("cnn1d", {}, (1, 40)), ("cnn2d", {}, (1, 8, 8)), ("resnet", {"depth": 20, "width": 8}, (3, 16, 16)),
          ("vgg", {"depth": 11, "width": 0.125}, (3, 32, 32)), ("wrn", {"depth": 10, "widen_factor": 1}, (3, 16, 16))]


@pytest.mark.parametrize("name, kwargs, shape", MODELS, ids=[m[0] for m in MODELS])
def test_every_transformation_works_on_every_registered_model(name, kwargs, shape):
    from ensemblekit.efficient.masksembles import to_masksembles

    base = create_model(name, input_shape=shape, num_classes=5, **kwargs)
    x = torch.randn(3, *shape)
    for net in (to_batch_ensemble(base, members=2), to_mimo(base, members=2), to_masksembles(base, members=2, scale=1.5)):
        assert net.eval()(x).shape == (2, 3, 5)
    packed = model_factory({"name": name, "kwargs": kwargs, "packed": {"alpha": 2, "members": 4}}, input_shape=shape, num_classes=5)
    assert Ensemble.from_factory(packed, seeds=[0, 1, 2, 3])(x).shape == (4, 3, 5)
