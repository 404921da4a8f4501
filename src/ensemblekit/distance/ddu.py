"""DDU: a softmax classifier whose feature density scores how unfamiliar an input is.

Mukhoti et al., "Deep Deterministic Uncertainty: A New Simple Baseline", CVPR 2023 (DDU)
train one network with spectrally bounded hidden layers (:mod:`.spectral`), then fit a
Gaussian discriminant analysis (GDA) to its penultimate features on the training set: one
Gaussian per class, ``N(mu_c, Sigma_c)`` with the class mean, the class's unbiased
covariance and the class frequency ``pi_c`` as prior. The feature density
``q(z) = sum_c pi_c N(z; mu_c, Sigma_c)`` is the epistemic score (low density: far from the
training features), and the softmax stays the classifier (its entropy the aleatoric score).

A covariance that is singular or badly conditioned gets a jitter on its diagonal, the
smallest of ``0, 1e-20, 1e-19, ..., 1`` for which its Cholesky factorisation succeeds
(:data:`JITTERS`; Mukhoti et al.'s code searches an increasing list in the same spirit), per
class; a class with fewer than two training examples has no covariance and is refused.
Densities are computed in float64 (features of thousands of dimensions give log-densities
far below what float32 represents well).

:class:`DDU` is a predictor kind: it wraps a trained :class:`~ensemblekit.ensemble.Ensemble`
(usually one member) with one GDA per member, fitted on the inputs of the member's final
linear layer (:func:`~ensemblekit.models.gaussian_head.final_linear`) in eval mode. Its
logits are the ensemble's; ``example_scores`` adds ``density``: minus the log feature
density, so that higher means more uncertain (for M > 1 members the mean over the members
of minus their log-densities). Its file holds the ensemble's tensors and the GDAs; its
export is the ensemble's classifier, which gives the probabilities; the density score is
computed by ensemblekit (``example_scores``, ``ensemblekit.evaluation.forward.example_scores``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from ..data.dataset import Split
from ..ensemble import Ensemble
from ..ensemble.wrapped import WrappedEnsemble
from ..errors import ConfigError, DataError
from ..models.gaussian_head import final_linear
from ..predictors import register_predictor
from ..serialization import load_tensors, save_tensors
from .members import capture, iter_members

__all__ = ["GDA", "fit_gda", "JITTERS", "DDU", "fit_ddu", "DDU_FORMAT"]

DDU_FORMAT = "ensemblekit.ddu/1"

JITTERS: tuple[float, ...] = (0.0, *(10.0 ** e for e in range(-20, 1)))
"""The diagonal jitters tried in turn until a class covariance's Cholesky factorisation succeeds."""

_FIELDS = ("means", "covariances", "priors", "jitters", "cholesky")


@dataclass(frozen=True)
class GDA:
    """A fitted Gaussian discriminant analysis: C classes in d feature dimensions (float64).

    Attributes:
        means: ``(C, d)``. covariances: ``(C, d, d)``, unbiased, without jitter.
        priors: ``(C,)`` class frequencies. jitters: ``(C,)`` the jitter each class needed.
        cholesky: ``(C, d, d)`` lower factors of ``covariances + jitter * I``.
    """

    means: torch.Tensor
    covariances: torch.Tensor
    priors: torch.Tensor
    jitters: torch.Tensor
    cholesky: torch.Tensor

    @property
    def num_classes(self) -> int:
        return int(self.means.shape[0])

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    def class_log_densities(self, z: torch.Tensor) -> torch.Tensor:
        """``log pi_c + log N(z; mu_c, Sigma_c)`` ``(N, C)`` of features ``z`` ``(N, d)``."""
        z = z.to(self.means.device, torch.float64)
        diff = (z.unsqueeze(0) - self.means.unsqueeze(1)).transpose(1, 2)  # (C, d, N)
        white = torch.linalg.solve_triangular(self.cholesky, diff, upper=False)
        maha = white.square().sum(1)  # (C, N)
        logdet = 2.0 * torch.log(torch.diagonal(self.cholesky, dim1=-2, dim2=-1)).sum(-1)  # (C,)
        log_n = -0.5 * (maha + logdet.unsqueeze(1) + self.dim * math.log(2 * math.pi))
        return (log_n + torch.log(self.priors).unsqueeze(1)).t()

    def log_density(self, z: torch.Tensor) -> torch.Tensor:
        """``log sum_c pi_c N(z; mu_c, Sigma_c)`` ``(N,)`` (float64)."""
        return torch.logsumexp(self.class_log_densities(z), dim=1)

    def num_parameters(self) -> int:
        """Numbers the density needs: means, the covariances' triangles and the priors."""
        c, d = self.num_classes, self.dim
        return c * d + c * d * (d + 1) // 2 + c

    def tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        return {f"{prefix}{k}": getattr(self, k) for k in _FIELDS}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], prefix: str, path: str = "") -> "GDA":
        missing = [f"{prefix}{k}" for k in _FIELDS if f"{prefix}{k}" not in tensors]
        if missing:
            raise DataError(f"{path}: lacks the DDU density tensor {missing[0]!r}")
        return cls(*(tensors[f"{prefix}{k}"].to(torch.float64) for k in _FIELDS))

    def to(self, device: torch.device | str) -> "GDA":
        return GDA(*(getattr(self, k).to(device) for k in _FIELDS))


def fit_gda(features: torch.Tensor, labels: torch.Tensor, num_classes: int, jitters: Sequence[float] = JITTERS) -> GDA:
    """Fit one Gaussian per class to ``features`` ``(N, d)`` with integer ``labels`` ``(N,)``.

    Args:
        num_classes: C (classes ``0..C-1``; each needs two examples or more).
        jitters: increasing diagonal jitters tried until each class's Cholesky succeeds.

    Raises:
        DataError: mismatched shapes, a class with fewer than two examples, or a covariance
            no jitter makes positive definite.

    Example:
        >>> gda = fit_gda(torch.randn(100, 3), torch.arange(100) % 2, 2)
        >>> gda.log_density(torch.zeros(1, 3)).shape
        torch.Size([1])
    """
    if features.dim() != 2 or labels.dim() != 1 or features.shape[0] != labels.shape[0]:
        raise DataError(f"fit_gda needs features (N, d) and labels (N,), got {tuple(features.shape)} and {tuple(labels.shape)}")
    z, y = features.detach().to(torch.float64), labels.detach().to(features.device).long()
    eye = torch.eye(z.shape[1], dtype=torch.float64, device=z.device)
    means, covs, chols, used = [], [], [], []
    for c in range(int(num_classes)):
        zc = z[y == c]
        if zc.shape[0] < 2:
            raise DataError(f"fit_gda: class {c} has {zc.shape[0]} training example(s); a class covariance needs at least 2")
        mu = zc.mean(0)
        cov = (zc - mu).t() @ (zc - mu) / (zc.shape[0] - 1)
        for jitter in jitters:
            chol, info = torch.linalg.cholesky_ex(cov + jitter * eye)
            if int(info) == 0 and bool(torch.isfinite(chol).all()):
                break
        else:
            raise DataError(f"fit_gda: the covariance of class {c} is not positive definite even with jitter {jitters[-1]:g}")
        means.append(mu)
        covs.append(cov)
        chols.append(chol)
        used.append(float(jitter))
    counts = torch.bincount(y, minlength=int(num_classes))[: int(num_classes)].to(torch.float64)
    return GDA(torch.stack(means), torch.stack(covs), counts / counts.sum(), torch.tensor(used, dtype=torch.float64, device=z.device),
               torch.stack(chols))


def _head(template: nn.Module) -> nn.Linear:
    found = final_linear(template)
    if found is None:
        raise ConfigError(f"DDU needs a model whose final layer is an nn.Linear (its inputs are the features), got {type(template).__name__}")
    return found[2]


@register_predictor
class DDU(WrappedEnsemble):
    """A trained ensemble (usually one member) and one feature density per member.

    Args:
        ensemble: the trained :class:`~ensemblekit.ensemble.Ensemble` (a classifier).
        gdas: one :class:`GDA` per member, fitted on that member's penultimate features.
    """

    file_format = DDU_FORMAT

    def __init__(self, ensemble: Ensemble, gdas: Sequence[GDA]) -> None:
        if len(gdas) != ensemble.num_members:
            raise ConfigError(f"DDU needs one density per member: {len(gdas)} for {ensemble.num_members} members")
        super().__init__(ensemble)
        self.gdas = list(gdas)

    def num_parameters(self) -> int:
        """The networks' parameters plus the numbers of their densities (:meth:`GDA.num_parameters`)."""
        return self.ensemble.num_parameters() + sum(g.num_parameters() for g in self.gdas)

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each member's penultimate features on ``x`` (the inputs of its final linear layer), in the ensemble's mode."""
        return [capture(group, j, x, [_head(group.template)])[0].reshape(x.shape[0], -1) for _, group, j in iter_members(self.ensemble)]

    @torch.no_grad()
    def example_scores(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"density": (B,)}``: minus the log feature density (higher = more uncertain), float64;
        the mean over members of minus their log-densities when there are several."""
        was = self.training
        self.eval()
        try:
            scores = [-gda.log_density(z) for gda, z in zip(self.gdas, self.features(x))]
        finally:
            self.train(was)
        return {"density": torch.stack(scores).mean(0)}

    def save(self, path: str) -> None:
        """The ensemble's tensors and metadata plus every member's density tensors."""
        tensors = dict(self.ensemble.state_tensors())
        for i, gda in enumerate(self.gdas):
            tensors.update(gda.to("cpu").tensors(f"ddu.{i}."))
        save_tensors(path, tensors, {"format": DDU_FORMAT, "ensemble": self.ensemble.metadata()})

    @classmethod
    def load(cls, path: str, factory: Callable[[], nn.Module] | Sequence[Callable[[], nn.Module]] | None = None,
             device: str | torch.device = "cpu", trust_factory: bool = False) -> "DDU":
        tensors, meta = load_tensors(path, device=device)
        if not isinstance(meta, dict) or meta.get("format") != DDU_FORMAT:
            raise DataError(f"{path}: not an ensemblekit DDU file")
        ens = Ensemble.from_saved(path, tensors, meta.get("ensemble"), factory, device, trust_factory)
        return cls(ens, [GDA.from_tensors(tensors, f"ddu.{i}.", path) for i in range(ens.num_members)])

    def to(self, device: torch.device | str) -> "DDU":
        return DDU(self.ensemble.to(device), [g.to(device) for g in self.gdas])

    def __repr__(self) -> str:
        return f"DDU({self.num_members} member(s), {self.gdas[0].num_classes} classes, {self.gdas[0].dim} features)"


@torch.no_grad()
def fit_ddu(ensemble: Ensemble, split: Split, batch_size: int = 512) -> DDU:
    """Fit one GDA per member on its penultimate features over ``split`` (the training split), in eval mode.

    Raises:
        ConfigError: a regression ensemble, or a model without a final linear layer.
        DataError: a class with fewer than two examples in ``split``.
    """
    if ensemble.readout.is_regression or (split.y is not None and split.y.is_floating_point()):
        raise ConfigError("DDU fits class-conditional densities, so it needs a classifier; this ensemble is a regression model")
    was = bool(ensemble.training)
    ensemble.eval()
    try:
        feats: list[list[torch.Tensor]] = [[] for _ in range(ensemble.num_members)]
        labels = []
        for xb, yb in split.batches(batch_size, device=ensemble.device):
            for i, (_, group, j) in enumerate(iter_members(ensemble)):
                feats[i].append(capture(group, j, xb, [_head(group.template)])[0].reshape(xb.shape[0], -1))
            labels.append(yb)
    finally:
        ensemble.train(was)
    y = torch.cat(labels)
    gdas = [fit_gda(torch.cat(f), y, _head(group.template).out_features) for f, (_, group, _) in zip(feats, iter_members(ensemble))]
    return DDU(ensemble, gdas)
