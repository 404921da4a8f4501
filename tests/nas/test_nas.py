"""The DARTS space, genotypes, EdgeNES's hypernetwork and soft count, ensemble selection."""

from __future__ import annotations

import math

import pytest
import torch

from ensemblekit.errors import ConfigError
from ensemblekit.nas.genotype import (DARTS_V2, Genotype, common_edges, derive_genotype, genotype_logits, node_slices, num_edges,
                                      perturb_genotype, random_genotype)
from ensemblekit.nas.hypernet import ArchHypernet
from ensemblekit.nas.ops import OP_NAMES, make_op
from ensemblekit.nas.relax import gumbel_softmax, relaxed_topk, segment_softmax, soft_common_edges
from ensemblekit.nas.select import ensemble_nll, exhaustive_select, forward_select, select_ensemble
from ensemblekit.nas.supernet import MixedOp, SearchNetwork


@pytest.mark.parametrize("dim,shape,out2", [(1, (2, 4, 9), (5,)), (2, (2, 4, 7, 6), (4, 3))])
@pytest.mark.parametrize("name", OP_NAMES)
def test_op_shapes_1d_2d(name, dim, shape, out2):
    x = torch.randn(*shape)
    assert make_op(name, 4, 1, dim)(x).shape == x.shape
    assert make_op(name, 4, 2, dim)(x).shape == (2, 4, *out2)


def test_op_errors():
    with pytest.raises(ConfigError, match="unknown DARTS operation 'conv'"):
        make_op("conv", 4, 1, 1)
    with pytest.raises(ConfigError, match="dim must be 1 or 2, got 3"):
        make_op("skip_connect", 4, 1, 3)


def test_mixed_op_one_hot_weights_pick_one_op_and_node_weights_sum_to_one():
    torch.manual_seed(0)
    mixed = MixedOp(4, 1, 1).eval()
    x = torch.randn(3, 4, 10)
    for k in range(len(OP_NAMES)):
        torch.testing.assert_close(mixed(x, torch.eye(len(OP_NAMES))[k]), mixed.ops[k](x))
    u = segment_softmax(torch.randn(2, 14), 4)
    for sl in node_slices(4):
        torch.testing.assert_close(u[:, sl].sum(-1), torch.ones(2))
    torch.testing.assert_close(torch.softmax(torch.randn(2, 14, 7), -1).sum(-1), torch.ones(2, 14))


def test_supernet_forward_shapes():
    net = SearchNetwork((1, 12), 3, channels=2, layers=2)
    w = (torch.full((2, 14, 7), 1 / 7), torch.full((2, 14), 0.5))
    assert net(torch.randn(2, 1, 12), w).shape == (2, 3)
    net2 = SearchNetwork((1, 6, 6), 5, channels=2, layers=2, nodes=2)
    assert net2(torch.randn(2, 1, 6, 6), (torch.full((2, 5, 7), 1 / 7), torch.full((2, 5), 0.5))).shape == (2, 5)


def test_genotype_derivation_on_hand_set_logits():
    alpha, beta = torch.zeros(2, 5, 7), torch.zeros(2, 5)  # 2 nodes: edges (0,0) (0,1) (1,0) (1,1) (1,2)
    beta[0] = torch.tensor([0.0, 0.0, 3.0, -1.0, 2.0])
    alpha[0, 0, OP_NAMES.index("sep_conv_3x3")] = 1.0
    alpha[0, 1, OP_NAMES.index("skip_connect")] = 1.0
    alpha[0, 2, OP_NAMES.index("dil_conv_5x5")] = 2.0
    alpha[0, 4, OP_NAMES.index("avg_pool_3x3")] = 0.5
    g = derive_genotype(alpha, beta)
    assert g.normal == ((("sep_conv_3x3", 0), ("skip_connect", 1)), (("dil_conv_5x5", 0), ("avg_pool_3x3", 2)))
    assert g.reduce == ((("max_pool_3x3", 0), ("max_pool_3x3", 1)), (("max_pool_3x3", 0), ("max_pool_3x3", 1)))
    assert g.text().splitlines()[0] == "normal: n0 = sep_conv_3x3(c_{k-2}) + skip_connect(c_{k-1}); n1 = dil_conv_5x5(c_{k-2}) + avg_pool_3x3(n0)"
    assert derive_genotype(alpha, beta, keep=1).normal[1] == (("dil_conv_5x5", 0),)
    assert derive_genotype(*genotype_logits(DARTS_V2)) == DARTS_V2
    assert Genotype.from_json(DARTS_V2.key()) == DARTS_V2
    with pytest.raises(ConfigError, match="keep"):
        derive_genotype(alpha, beta, keep=3)


def test_common_edges_random_and_perturbed_genotypes():
    assert num_edges(4) == 14 and DARTS_V2.num_kept == 16
    assert common_edges(DARTS_V2, DARTS_V2) == 16
    for k in (0, 1, 5, 16):
        assert common_edges(perturb_genotype(DARTS_V2, k, seed=k), DARTS_V2) == 16 - k
    r = random_genotype(3)
    assert r == random_genotype(3) and r.num_kept == 16
    with pytest.raises(ConfigError, match="k \\(edges to change\\) must be in 0..16, got 17"):
        perturb_genotype(DARTS_V2, 17, 0)


def test_hypernet_interpolates_at_pivots_and_halfway():
    torch.manual_seed(0)
    h = ArchHypernet(torch.randn(2, 14, 7), torch.randn(2, 14), lam_max=16.0, pivots=5, noise=1.0)
    for k in range(5):  # pivots at 0, 4, 8, 12, 16
        a, b = h(4.0 * k)
        torch.testing.assert_close(a, h.alphas[k])
        torch.testing.assert_close(b, h.betas[k])
    a, b = h(6.0)
    torch.testing.assert_close(a, (h.alphas[1] + h.alphas[2]) / 2)
    torch.testing.assert_close(b, (h.betas[1] + h.betas[2]) / 2)
    a, _ = h(5.0)  # w = 0.25 on the right pivot: the gradient goes (0.75, 0.25) to the neighbours
    a.sum().backward()
    assert h.alphas.grad[1].unique().tolist() == [0.75] and h.alphas.grad[2].unique().tolist() == [0.25]
    assert h.alphas.grad[[0, 3, 4]].abs().sum() == 0
    left, right = h(8.0 - 1e-4)[0], h(8.0 + 1e-4)[0]  # continuous across a pivot
    assert (left - right).abs().max() < 1e-3
    with pytest.raises(ConfigError, match="pivots \\(K\\) must be >= 2, got 1"):
        ArchHypernet(torch.zeros(2, 14, 7), torch.zeros(2, 14), 16.0, pivots=1)


def test_hypernet_sampling_matches_its_distribution():
    alpha, beta = torch.zeros(2, 2, 7), torch.zeros(2, 2)  # one node with 2 inputs
    alpha[0, 0] = torch.log(torch.tensor([0.4, 0.3, 0.1, 0.1, 0.05, 0.03, 0.02]))
    h = ArchHypernet(alpha, beta, lam_max=2.0, pivots=2, noise=0.0)
    g = torch.Generator().manual_seed(0)
    counts = torch.zeros(7)
    n = 4000
    for _ in range(n):
        op = h.sample(1.0, keep=1, generator=g).normal[0]
        if op[0][1] == 0:
            counts[OP_NAMES.index(op[0][0])] += 1
    # input 0 is kept with probability 1/2 (equal beta); the op given input 0 follows softmax(alpha)
    assert abs(counts.sum() / n - 0.5) < 0.03
    freq = counts / counts.sum()
    assert (freq - torch.tensor([0.4, 0.3, 0.1, 0.1, 0.05, 0.03, 0.02])).abs().max() < 0.035
    assert h.mode(1.0, keep=1).normal[0] == (("max_pool_3x3", 0),)


def test_soft_count_equals_discrete_count_at_zero_temperature():
    star = random_genotype(0)
    other = perturb_genotype(star, 5, seed=1)
    alpha, beta = genotype_logits(other, scale=10.0)
    zeros = (torch.zeros_like(alpha), torch.zeros_like(beta))
    ops = gumbel_softmax(alpha, 1e-3, zeros[0])
    khot = torch.cat([relaxed_topk(beta[..., sl], 2, 1e-3, zeros[1][..., sl]) for sl in node_slices(4)], -1)
    s = soft_common_edges(ops, khot, star, tau=1.0)
    assert common_edges(other, star) == 11
    assert float(s) == pytest.approx(11.0, abs=1e-4)
    # tau = 0.99: a shared edge counts 0.99 + 0.01/7, a changed op on a kept input 0.01/7
    s_smooth = soft_common_edges(ops, khot, star, tau=0.99)
    assert 11 * (0.99 + 0.01 / 7) - 1e-4 <= float(s_smooth) <= 11 * (0.99 + 0.01 / 7) + 5 * 0.01 / 7 + 1e-4
    hot = relaxed_topk(torch.tensor([0.0, 5.0, 1.0, 3.0]), 2, 1e-3, torch.zeros(4))
    torch.testing.assert_close(hot, torch.tensor([0.0, 1.0, 0.0, 1.0]))
    soft = relaxed_topk(torch.tensor([0.0, 5.0, 1.0, 3.0]), 2, 100.0, torch.zeros(4))  # high T: spread evenly
    assert float(soft.sum()) == pytest.approx(2.0) and (soft - 0.5).abs().max() < 0.02


def test_forward_selection_on_hand_made_probabilities():
    y = torch.tensor([0, 1, 2])
    p = torch.tensor([
        [[.8, .1, .1], [.1, .8, .1], [.6, .2, .2]],   # best alone but wrong on x2
        [[.7, .2, .1], [.2, .7, .1], [.5, .3, .2]],   # a copy-like candidate with the same mistake
        [[.3, .3, .4], [.3, .3, .4], [.1, .1, .8]],   # weak alone, fixes x2
        [[.1, .8, .1], [.8, .1, .1], [.1, .8, .1]],   # bad
    ])
    assert forward_select(p, y, 1) == [0]
    assert forward_select(p, y, 2) == [0, 2]
    nll02 = ensemble_nll(p[[0, 2]], y)
    assert nll02 == pytest.approx(-(math.log(.55) + math.log(.55) + math.log(.5)) / 3)
    assert nll02 < ensemble_nll(p[[0, 1]], y)
    assert exhaustive_select(p, y, 2) == [0, 2] and select_ensemble(p, y, 3) == exhaustive_select(p, y, 3)
    with pytest.raises(ConfigError, match="ensemble size n must be in 1..4"):
        forward_select(p, y, 5)
