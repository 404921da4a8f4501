"""Learning-rate policies against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from ensemblekit.errors import ConfigError
from ensemblekit.training.schedules import (
    build_schedule, constant, cosine, cosine_restarts, fge_triangle, inverse_sqrt, join, lambda_lr, linear, step_decay, warmup,
)

approx = pytest.approx


def test_constant_and_step_decay():
    assert constant(0.1)(0) == constant(0.1)(10**6) == 0.1
    s = step_decay(0.1, [10, 20], gamma=0.5)
    assert [s(9), s(10), s(19), s(20), s(1000)] == approx([0.1, 0.05, 0.05, 0.025, 0.025])


def test_cosine_and_linear():
    c = cosine(0.1, 100)
    # 25: 0.05 * (1 + cos(pi/4)) = 0.05 * 1.7071068
    assert [c(0), c(25), c(50), c(100), c(150)] == approx([0.1, 0.0853553, 0.05, 0.0, 0.0], abs=1e-7)
    assert cosine(0.1, 100, min_lr=0.02)(50) == approx(0.06)
    lin = linear(0.1, 100, end_lr=0.0)
    assert [lin(0), lin(50), lin(100), lin(200)] == approx([0.1, 0.05, 0.0, 0.0])


def test_inverse_sqrt_and_warmup():
    s = inverse_sqrt(0.1, 100)
    assert [s(0), s(50), s(100), s(400)] == approx([0.1, 0.1, 0.1, 0.05])
    w = warmup(cosine(0.1, 100), 10)
    # linear from 0 to cosine(0) = 0.1 over 10 steps, then the cosine from its own step 0
    assert [w(0), w(5), w(10), w(60), w(110)] == approx([0.0, 0.05, 0.1, 0.05, 0.0], abs=1e-12)


def test_cosine_with_warm_restarts_cycle_start_middle_end():
    s = cosine_restarts(0.2, 10)
    # end of a cycle (step 9): 0.1 * (1 + cos(0.9 pi)) = 0.1 * (1 - 0.9510565) = 0.0048943
    assert [s(0), s(5), s(9), s(10), s(15)] == approx([0.2, 0.1, 0.0048943, 0.2, 0.1], abs=1e-7)


def test_fge_triangle_at_cycle_start_middle_and_end():
    a1, a2, c = 0.05, 0.01, 4
    s = fge_triangle(a1, a2, c)
    # t(i) = ((i-1) mod c + 1)/c with i = step + 1: t = 1/4, 1/2, 3/4, 1, 1/4, ...
    # t=1/4: (1-1/2) a1 + (1/2) a2 = 0.03; t=1/2: a2; t=3/4: (1/2) a2 + (1/2) a1 = 0.03; t=1 (= t=0 of the next cycle): a1
    assert [s(k) for k in range(9)] == approx([0.03, 0.01, 0.03, 0.05, 0.03, 0.01, 0.03, 0.05, 0.03])
    long = fge_triangle(0.1, 0.001, 80)
    assert long(39) == approx(0.001) and long(79) == approx(0.1) and long(19) == approx(0.0505)


@pytest.mark.parametrize("kwargs, match", [
    ({"a1": 0.1, "a2": 0.01, "cycle_steps": 3}, "even number of iterations >= 2, got 3"),
    ({"a1": 0.1, "a2": 0.01, "cycle_steps": 0}, "even number"),
    ({"a1": 0.01, "a2": 0.05, "cycle_steps": 4}, "a1 > a2"),
    ({"a1": 0.01, "a2": 0.0, "cycle_steps": 4}, "a2 must be > 0"),
])
def test_fge_triangle_validation(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        fge_triangle(**kwargs)


def test_join_runs_each_policy_from_its_own_start():
    s = join([constant(0.1), fge_triangle(0.05, 0.01, 4)], [10])
    assert [s(9), s(10), s(11), s(13)] == approx([0.1, 0.03, 0.01, 0.05])


def test_build_from_config_in_epochs_and_iterations():
    s = build_schedule({"name": "step", "milestones": [1, 2], "gamma": 0.1}, lr=1.0, total_steps=30, steps_per_epoch=10)
    assert [s(9), s(10), s(20)] == approx([1.0, 0.1, 0.01])
    s = build_schedule({"name": "step", "milestones": [5], "unit": "iteration"}, lr=1.0, total_steps=30, steps_per_epoch=10)
    assert [s(4), s(5)] == approx([1.0, 0.1])
    s = build_schedule({"name": "cosine_restarts", "cycles": 3}, lr=1.0, total_steps=30, steps_per_epoch=10)
    assert [s(0), s(10), s(20), s(5)] == approx([1.0, 1.0, 1.0, 0.5])
    s = build_schedule({"name": "cosine", "warmup": 1}, lr=1.0, total_steps=30, steps_per_epoch=10)
    assert [s(0), s(5), s(10), s(20), s(30)] == approx([0.0, 0.5, 1.0, 0.5, 0.0], abs=1e-12)
    s = build_schedule({"name": "fge", "a1": 0.05, "a2": 0.01, "cycle": 0.4}, lr=0.05, total_steps=30, steps_per_epoch=10)
    assert [s(1), s(3)] == approx([0.01, 0.05])
    with pytest.raises(ConfigError, match="unknown option 'gama'"):
        build_schedule({"name": "step", "gama": 0.1}, lr=1.0, total_steps=30, steps_per_epoch=10)


def test_lambda_lr_keeps_each_groups_own_rate():
    a, b = torch.zeros(1, requires_grad=True), torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([{"params": [a], "lr": 0.1}, {"params": [b], "lr": 0.3}])
    sched = lambda_lr(opt, cosine(0.1, 10), base_lr=0.1)
    for _ in range(5):
        opt.step()
        sched.step()
    assert [g["lr"] for g in opt.param_groups] == approx([0.05, 0.15])
    resumed = lambda_lr(opt, cosine(0.1, 10), base_lr=0.1, last_step=4)
    assert [g["lr"] for g in opt.param_groups] == approx([0.05, 0.15])
    assert math.isclose(resumed.last_epoch, 5)


def test_piecewise_reference_schedule():
    from ensemblekit.training.schedules import piecewise

    s = piecewise(0.1, 100, [(0, 1), (0.5, 1), (0.9, 0.01), (1, 0.01)])
    # 70: halfway between 50 (factor 1) and 90 (factor 0.01) -> 0.505
    assert [s(0), s(50), s(70), s(90), s(100), s(500)] == approx([0.1, 0.1, 0.0505, 0.001, 0.001, 0.001])
    with pytest.raises(ConfigError, match="start at fraction 0"):
        piecewise(0.1, 100, [(0.2, 1), (1, 0.1)])
