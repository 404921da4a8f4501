"""Candidate pools of the architecture-search methods and the statistics of their reports.

- :func:`sample_pool`: architectures from EdgeNES's hypernetwork at lambdas on a grid over
  ``[0, Lambda]`` or drawn uniformly, with their common-edge count with alpha*;
- :func:`random_pool`, :func:`deviation_pool`: NES-RS's random architectures and random
  deviations of alpha* (k edges changed);
- :func:`anytime_curve`, :func:`curve_auc`: accuracy against wall-clock as architectures
  arrive (the cost side of the EdgeNES comparison);
- :func:`spearman`: rank correlation of lambda and the common-edge count (the diversity
  control).

Paper: Babkin & Bakhteev, "Differentiable search of neural-network ensembles with
diversity control" (MIPT, 2024); Zaidi et al., "Neural Ensemble Search for Uncertainty
Estimation and Dataset Shift", NeurIPS 2021 (NES-RS). See ``docs/methods.md``.
"""

from __future__ import annotations

import math
import random
import warnings
from typing import Any, Sequence

import numpy as np
import torch

from ..seeding import derive_seed
from .genotype import Genotype, common_edges, perturb_genotype, random_genotype
from .select import select_ensemble

__all__ = ["sample_pool", "random_pool", "deviation_pool", "spearman", "anytime_curve", "curve_auc"]


def sample_pool(hyper: Any, star: Genotype, n: int, how: str, seed: int, keep: int = 2) -> list[dict[str, Any]]:
    """``n`` architectures from the hypernetwork at lambdas on a grid over [0, Lambda] (``how="grid"``)
    or drawn uniformly (``"uniform"``); each row: ``{lambda, genotype, common}`` (discrete common
    edges with alpha*)."""
    lam_max = hyper.lam_max
    g = torch.Generator().manual_seed(int(seed))
    lams = np.linspace(0.0, lam_max, n).tolist() if how == "grid" else (torch.rand(n, generator=g) * lam_max).tolist()
    rows = []
    for lam in lams:
        geno = hyper.sample(lam, keep, generator=g)
        rows.append({"lambda": float(lam), "genotype": geno, "common": common_edges(geno, star)})
    return rows


def random_pool(seed: int, n: int, nodes: int, keep: int) -> list[Genotype]:
    """``n`` uniformly random genotypes (NES-RS's pool; its first one is the random-architecture baseline)."""
    rng = random.Random(derive_seed(seed, "random"))
    return [random_genotype(rng.randrange(2**31), nodes, keep) for _ in range(n)]


def deviation_pool(star: Genotype, seed: int, n: int, k: int) -> list[Genotype]:
    """``n`` copies of alpha* with ``min(k, kept edges)`` random edges changed each."""
    rng = random.Random(derive_seed(seed, "deviation"))
    k = min(int(k), star.num_kept)
    return [perturb_genotype(star, k, rng.randrange(2**31)) for _ in range(n)]


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks for ties); NaN when one side is constant."""
    from scipy.stats import spearmanr

    if len(set(a)) < 2 or len(set(b)) < 2:
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(spearmanr(a, b).statistic)


def anytime_curve(val: torch.Tensor, test: torch.Tensor, y_val: torch.Tensor, y_test: torch.Tensor,
                  find_parts: Sequence[float], seconds: Sequence[float], n: int) -> list[list[float]]:
    """Accuracy-vs-time points ``[t_k, acc_k]``: after the k-th architecture has been found
    (``find_parts[k]`` seconds) and retrained (``seconds[k]``), the test accuracy of the best
    ensemble of <= n members chosen on validation from the first k candidates.

    Args:
        val, test: ``(P, N, C)`` probabilities of the P candidates in the order they arrive.
    """
    t, out = 0.0, []
    for k in range(val.shape[0]):
        t += find_parts[k] + seconds[k]
        chosen = select_ensemble(val[: k + 1], y_val, min(n, k + 1))
        out.append([t, float((test[chosen].mean(0).argmax(1) == y_test).float().mean())])
    return out


def curve_auc(curve: Sequence[Sequence[float]], horizon: float) -> float:
    """Normalised area under a step accuracy-vs-time curve on ``[0, horizon]``: accuracy 0
    until the first point, then the last reached accuracy (a higher value is a method that
    is accurate sooner)."""
    area, prev_t, prev_acc = 0.0, 0.0, 0.0
    for t, acc in curve:
        t = min(t, horizon)
        area += (t - prev_t) * prev_acc
        prev_t, prev_acc = t, acc
    return (area + (horizon - prev_t) * prev_acc) / horizon
