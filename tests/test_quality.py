"""End-to-end quality checks on MNIST-1D with fixed seeds (a method must beat its baseline by a margin)."""

from __future__ import annotations

import pytest

import ensemblekit as ek


@pytest.fixture(scope="module")
def mnist1d():
    return ek.load_dataset("mnist1d")


def test_three_member_ensemble_beats_its_members_on_mnist1d(mnist1d):
    method = ek.create_method("independent", model="cnn1d", members=3, epochs=8, optimizer={"name": "adam", "lr": 0.01}, progress=False, seed=0)
    res = ek.evaluate(method.fit(mnist1d).ensemble_, mnist1d.test)
    errors = [100 * (1 - a) for a in res["members"]["accuracy"]]
    # below every member, and clearly below the average member (float sums differ between
    # CPUs and thread counts, so the margin is against the mean, not one lucky member)
    assert res["error"] < min(errors)
    assert res["error"] < sum(errors) / len(errors) - 0.75
    assert res["nll"] < min(res["members"]["nll"])
    assert res["diversity"]["disagreement"] > 0.01
