"""A Prior Network: one network whose outputs are the concentrations of a Dirichlet over class probabilities.

Malinin & Gales, "Predictive Uncertainty Estimation via Prior Networks", NeurIPS 2018; an
EnD² student (Malinin, Mlodozeniec & Gales, ICLR 2020) is one. With ``α = exp(z)`` and
``α₀ = Σ_c α_c`` the predictive is the Dirichlet's mean ``α / α₀ = softmax(z)`` (so the
network's probabilities, accuracy, NLL and export are those of its softmax), and the
Dirichlet splits its uncertainty in closed form (Malinin & Gales 2018, eq. 6):

- total: ``H[α / α₀]``, the entropy of the mean;
- aleatoric (expected data uncertainty): ``E_{π ~ Dir(α)} H[π] = -Σ_c (α_c / α₀) (ψ(α_c + 1) - ψ(α₀ + 1))``;
- epistemic (mutual information between the label and π): total minus aleatoric.

:class:`PriorNetwork` is a predictor kind: a trained :class:`~ensemblekit.ensemble.Ensemble`
(one member; several: their scores averaged) read as a Dirichlet. Its ``example_scores`` give
``mi`` (the Dirichlet's mutual information) and ``aleatoric`` (the expected entropy), which
the evaluation uses instead of the member-based ones (:meth:`ensemblekit.metrics.predictive.Categorical.scores`).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from ..ensemble import Ensemble
from ..ensemble.wrapped import WrappedEnsemble
from ..errors import DataError
from ..predictors import register_predictor
from ..serialization import load_tensors, save_tensors
from .losses import MAX_LOG_CONCENTRATION

__all__ = ["dirichlet_uncertainty", "PriorNetwork", "PRIOR_NETWORK_FORMAT"]

PRIOR_NETWORK_FORMAT = "ensemblekit.prior_network/1"


def dirichlet_uncertainty(logits: torch.Tensor) -> dict[str, torch.Tensor]:
    """Total, aleatoric and epistemic uncertainty (nats) of ``Dir(exp(z))`` per example, float64.

    Args:
        logits: log-concentrations ``(..., C)``.

    Returns:
        ``{"total": H[mean], "aleatoric": E[H[π]], "mi": total - aleatoric}``, each ``(...)``
        (``mi`` clamped at 0 against round-off).

    Example:
        >>> u = dirichlet_uncertainty(torch.zeros(1, 2))   # Dir(1, 1): uniform over the simplex
        >>> round(float(u["aleatoric"]), 4)                 # E[H] = 1/2 nat for two classes
        0.5
    """
    z = logits.to(torch.float64).clamp(-MAX_LOG_CONCENTRATION, MAX_LOG_CONCENTRATION)
    alpha = torch.exp(z)
    a0 = alpha.sum(-1, keepdim=True)
    mean = alpha / a0
    total = -(mean * torch.log(mean.clamp_min(1e-300))).sum(-1)
    aleatoric = -(mean * (torch.digamma(alpha + 1) - torch.digamma(a0 + 1))).sum(-1)
    return {"total": total, "aleatoric": aleatoric, "mi": (total - aleatoric).clamp_min(0.0)}


@register_predictor
class PriorNetwork(WrappedEnsemble):
    """A trained network read as a Dirichlet: its softmax is the predictive, its concentrations the spread.

    Args:
        ensemble: the trained :class:`~ensemblekit.ensemble.Ensemble` (a classifier whose outputs
            are log-concentrations; usually one member).
    """

    file_format = PRIOR_NETWORK_FORMAT

    @torch.no_grad()
    def example_scores(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"mi": (B,), "aleatoric": (B,)}``: the Dirichlet's mutual information and expected entropy
        (the mean over members when there are several), float64."""
        was = self.training
        self.eval()
        try:
            parts = dirichlet_uncertainty(self.ensemble.logits(x))  # (M, B) each
        finally:
            self.train(was)
        return {"mi": parts["mi"].mean(0), "aleatoric": parts["aleatoric"].mean(0)}

    def save(self, path: str) -> None:
        save_tensors(path, dict(self.ensemble.state_tensors()), {"format": PRIOR_NETWORK_FORMAT, "ensemble": self.ensemble.metadata()})

    @classmethod
    def load(cls, path: str, factory: Callable[[], nn.Module] | Sequence[Callable[[], nn.Module]] | None = None,
             device: str | torch.device = "cpu", trust_factory: bool = False) -> "PriorNetwork":
        tensors, meta = load_tensors(path, device=device)
        if not isinstance(meta, dict) or meta.get("format") != PRIOR_NETWORK_FORMAT:
            raise DataError(f"{path}: not an ensemblekit Prior Network file")
        return cls(Ensemble.from_saved(path, tensors, meta.get("ensemble"), factory, device, trust_factory))

    def to(self, device: torch.device | str) -> "PriorNetwork":
        return PriorNetwork(self.ensemble.to(device))

    def __repr__(self) -> str:
        return f"PriorNetwork({self.num_members} member(s))"
