"""Per-example test losses: a bootstrap's statistic of the full set is exactly the table's metric."""

from __future__ import annotations

import numpy as np
import torch

from ensemblekit.metrics.per_example import STATISTICS, columns, load_per_example, per_example_losses, save_per_example
from ensemblekit.metrics.predictive import Categorical, Gaussian
from ensemblekit.metrics.regression_summary import evaluate_gaussian
from ensemblekit.metrics.summary import evaluate_probs


def _stat(losses, metric):
    return STATISTICS[metric][1](columns({k: np.asarray(v) for k, v in losses.items()}, metric))


def test_classification_statistics_equal_the_split_metrics():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 500, 4, generator=g)
    probs, y = logits.softmax(-1), torch.randint(0, 4, (500,), generator=g)
    m = evaluate_probs(probs, y)
    losses = per_example_losses(Categorical(probs, logits), y)
    assert abs(_stat(losses, "error") - 100.0 * (1.0 - m["accuracy"])) < 1e-9
    assert abs(_stat(losses, "nll") - m["nll"]) < 1e-6
    assert abs(_stat(losses, "ece") - 100.0 * m["ece"]) < 1e-4


def test_a_hand_computed_pair_of_examples():
    # pooled probabilities [0.7, 0.3] (label 0: right, NLL -log 0.7) and [0.4, 0.6] (label 0: wrong, NLL -log 0.4)
    probs = torch.tensor([[[0.7, 0.3], [0.4, 0.6]]])
    losses = per_example_losses(Categorical(probs, probs.log()), torch.tensor([0, 0]))
    assert losses["error"].tolist() == [0.0, 1.0]
    assert np.allclose(losses["nll"].numpy(), [-np.log(0.7), -np.log(0.4)])
    assert np.allclose(losses["confidence"].numpy(), [0.7, 0.6])
    # 15 bins: 0.7 in bin 10 (acc 1), 0.6 in bin 8 (acc 0): ECE = (|1 - 0.7| + |0 - 0.6|) / 2 = 0.45
    assert abs(_stat(losses, "ece") - 45.0) < 1e-5  # float32 probabilities


def test_regression_statistics_equal_the_split_metrics(tmp_path):
    g = torch.Generator().manual_seed(1)
    mean, var = torch.randn(4, 300, generator=g), torch.rand(4, 300, generator=g) + 0.1
    y = torch.randn(300, generator=g)
    pd = Gaussian(mean, var)
    m = evaluate_gaussian(pd, y)
    save_per_example(str(tmp_path), pd, y)
    losses = load_per_example(str(tmp_path))
    assert sorted(losses) == ["crps", "nll", "squared_error"]
    assert abs(_stat(losses, "rmse") - m["rmse"]) < 1e-9
    assert abs(_stat(losses, "nll") - m["nll"]) < 1e-9
    assert abs(_stat(losses, "crps") - m["crps"]) < 1e-9
    assert load_per_example(str(tmp_path / "missing")) is None
