"""SWAG: a Gaussian over the weights from the SWA trajectory; members are samples from it.

Maddox, Garipov, Izmailov, Vetrov & Wilson, "A Simple Baseline for Bayesian Uncertainty in
Deep Learning", NeurIPS 2019; MultiSWAG: Wilson & Izmailov, "Bayesian Deep Learning and a
Probabilistic Perspective of Generalization", NeurIPS 2020.

Along the trajectory, at every collection step i, the collector updates for each parameter
the running mean ``θ̄ = mean_i θ_i``, the running mean of squares ``mean_i θ_i²`` and keeps
the last K deviations ``D = [θ_i − θ̄_i]`` (θ̄_i: the mean after step i). Then

- ``Σ_diag = max(mean θ² − θ̄², 0)``,
- a sample ``θ = θ̄ + √scale · (Σ_diag^{1/2} ∘ z1 / √2 + D z2 / √(2(K − 1)))``, z ~ N(0, I)
  (the low-rank part needs K >= 2; with one deviation only the diagonal is used),

so ``Cov θ = scale · (Σ_diag + D Dᵀ / (K − 1)) / 2``: ``scale`` multiplies the covariance, as
the ``scale`` of the paper's code does, and ``scale = 1`` is the paper's Gaussian (its code,
whose formula has no ``1/√2``, draws the same one with ``scale = 0.5``). Each sample's BatchNorm
statistics are recomputed with one pass over the training data. The collector works on
stacked members, so R trajectories trained side by side give MultiSWAG: every trajectory
contributes its own samples. With ``scale = 0`` every sample is the SWA mean (tested).
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from ..training.callbacks import Callback

__all__ = ["SWAGCollector", "swag_samples"]


class SWAGCollector(Callback):
    """Running moments and the last ``rank`` deviations of every stacked parameter at the steps where ``when(step)``.

    Args:
        when: ``step -> bool``, the collection steps (e.g. FGE's cycle middles, or once per epoch).
        rank: K, deviations kept (>= 1; default 20).
    """

    name = "swag"

    def __init__(self, when: Callable[[int], bool], rank: int = 20) -> None:
        self.when, self.rank = when, int(rank)
        self.mean: dict[str, torch.Tensor] | None = None
        self.sq_mean: dict[str, torch.Tensor] | None = None
        self.deviations: list[dict[str, torch.Tensor]] = []
        self.count = 0

    def collect(self, params: dict[str, torch.Tensor]) -> None:
        """Fold one snapshot of the parameters (name -> stacked tensor) into the moments."""
        current = {k: v.detach().double() for k, v in params.items()}
        n = self.count
        if self.mean is None:
            self.mean = {k: v.clone() for k, v in current.items()}
            self.sq_mean = {k: v.pow(2) for k, v in current.items()}
        else:
            for k, v in current.items():
                self.mean[k].mul_(n / (n + 1)).add_(v / (n + 1))
                self.sq_mean[k].mul_(n / (n + 1)).add_(v.pow(2) / (n + 1))  # type: ignore[index]
        self.count = n + 1
        self.deviations.append({k: (current[k] - self.mean[k]).clone() for k in current})
        self.deviations = self.deviations[-self.rank:]

    def on_step_end(self, trainer: Any, step: int, batch: Any) -> None:
        if self.when(step):
            self.collect(trainer.model.state_tensors(buffers=False))

    def variance(self) -> dict[str, torch.Tensor]:
        """The diagonal ``max(mean θ² − θ̄², 0)``."""
        assert self.mean is not None and self.sq_mean is not None
        return {k: (self.sq_mean[k] - self.mean[k].pow(2)).clamp_min(0.0) for k in self.mean}

    def state_dict(self) -> dict[str, Any]:
        if self.mean is None:
            return {}
        return {"mean": self.mean, "sq_mean": self.sq_mean, "count": self.count,
                "deviations": {str(i): d for i, d in enumerate(self.deviations)}, "kept": len(self.deviations)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self.mean = {k: v.clone() for k, v in state["mean"].items()}
        self.sq_mean = {k: v.clone() for k, v in state["sq_mean"].items()}
        self.count = int(state["count"])
        self.deviations = [state["deviations"][str(i)] for i in range(int(state["kept"]))]


@torch.no_grad()
def swag_samples(collector: SWAGCollector, samples: int, scale: float, generator: torch.Generator, members: int) -> list[dict[str, torch.Tensor]]:
    """``samples`` weight draws per trajectory: a list (one per draw) of name -> stacked ``(R, ...)`` tensors.

    ``scale`` (>= 0) multiplies the covariance of the draws (their spread grows as ``√scale``;
    see the module docstring)."""
    if collector.mean is None:
        raise ValueError("SWAG collected nothing: no collection step fell inside the run")
    var = collector.variance()
    k = len(collector.deviations)
    std_scale = scale ** 0.5
    out = []
    for _ in range(samples):
        draw = {}
        z2 = torch.randn(members, k, generator=generator, dtype=torch.float64)  # one z2 per trajectory
        for name, mean in collector.mean.items():
            z1 = torch.randn(mean.shape, generator=generator, dtype=torch.float64)
            w = mean + std_scale * var[name].sqrt() * z1 / 2 ** 0.5
            if k >= 2:
                low = sum(collector.deviations[j][name] * z2[:, j].reshape(members, *([1] * (mean.dim() - 1))) for j in range(k))
                w = w + std_scale * low / (2 * (k - 1)) ** 0.5
            draw[name] = w.float()
        out.append(draw)
    return out
