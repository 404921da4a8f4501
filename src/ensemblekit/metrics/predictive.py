"""The predictive distribution every metric reads: what a predictor says about a set of examples.

A predictor's M members each give a distribution over the target of every example. For
classification that is a categorical distribution, :class:`Categorical`: the members'
probabilities and logits ``(M, N, C)``. For regression it is a Gaussian per member,
:class:`Gaussian`: the members' means and variances ``(M, N)`` or ``(M, N, D)``, which the
ensemble pools as a uniform mixture. The object carries the operations the metrics and
the evaluation need (pool the members, take a prefix of them, score each example's
uncertainty) so that they ask the object instead of reaching into its tensors' layout.

:func:`ensemblekit.evaluation.forward.predictive` produces it (one pass over members,
batches and test-time transforms); this module only holds the type, so that the metrics stay
pure functions of (predictive, targets).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np
import torch

from ..errors import ConfigError, DataError
from .classification import float_tensor

__all__ = ["Categorical", "Gaussian", "GAUSSIAN_SCORES"]


@dataclass(frozen=True)
class Categorical:
    """M members' categorical predictive distributions over N examples.

    Attributes:
        probs: members' probabilities ``(M, N, C)`` (float32, CPU); with test-time
            augmentation the mean over the transformed inputs.
        logits: members' logits ``(M, N, C)``, averaged the same way (the softmax of the mean
            logits is not ``probs`` under TTA: each is the mean of its own quantity).
        extras: per-example scores ``(N,)`` the predictor computes itself, by name (DDU's
            feature density, :data:`ensemblekit.metrics.ood.PREDICTOR_SCORES`; a Prior Network's
            ``mi``, which replaces the member-based one; higher: more uncertain); empty for most predictors. They describe the whole predictor, so a
            subset of its members carries none.

    Example:
        >>> pd = predictive(method.ensemble_, data.test)
        >>> pd.pooled().argmax(-1)              # the ensemble's classes (N,)
        >>> pd.scores(["mi", "entropy"])["mi"]  # per-example mutual information (N,)
    """

    probs: torch.Tensor
    logits: torch.Tensor
    extras: Mapping[str, torch.Tensor] = field(default_factory=dict)
    kind: ClassVar[str] = "categorical"

    @property
    def num_members(self) -> int:
        return int(self.probs.shape[0])

    @property
    def num_examples(self) -> int:
        return int(self.probs.shape[1])

    @property
    def num_classes(self) -> int:
        return int(self.probs.shape[2])

    def pooled(self) -> torch.Tensor:
        """The ensemble's distribution ``(N, C)``: the mean of the members' probabilities."""
        return self.probs.mean(0)

    def prefix(self, k: int) -> "Categorical":
        """The predictive of the first ``k`` members (the predictor's own scores only when ``k`` is all of them)."""
        return Categorical(self.probs[:k], self.logits[:k], self.extras if k >= self.num_members else {})

    def members(self, indices: Sequence[int]) -> "Categorical":
        """The predictive of the chosen members, in the given order."""
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        return Categorical(self.probs[idx], self.logits[idx])

    def correct(self, y: torch.Tensor) -> torch.Tensor:
        """Whether the ensemble's class is the label, per example ``(N,)`` bool."""
        return self.pooled().argmax(-1) == y

    def scores(self, names: Sequence[str]) -> dict[str, torch.Tensor]:
        """Per-example uncertainty scores ``(N,)`` (higher: more uncertain), by name: see
        :func:`ensemblekit.metrics.ood.uncertainty_scores`; a predictor's own score
        (:data:`~ensemblekit.metrics.ood.PREDICTOR_SCORES`) is there when the predictor gave it and
        left out otherwise (a DDU's density, and no density for an ensemble). A score the predictor
        computes itself takes the place of the one computed from its members (a Prior Network's
        mutual information comes from its Dirichlet, not from its one member)."""
        from .ood import PREDICTOR_SCORES, uncertainty_scores

        names = [names] if isinstance(names, str) else list(names)
        own = [n for n in names if n in PREDICTOR_SCORES or n in self.extras]
        out = uncertainty_scores(self.probs, self.logits, [n for n in names if n not in own]) if len(own) < len(names) else {}
        out.update({n: self.extras[n] for n in own if n in self.extras})
        return {n: out[n] for n in names if n in out}

    @staticmethod
    def mean_of(parts: Sequence["Categorical"]) -> "Categorical":
        """The mean of predictives of the same examples (test-time augmentation), summed in order."""
        probs, logits, extras = parts[0].probs, parts[0].logits, dict(parts[0].extras)
        for p in parts[1:]:
            probs, logits = probs + p.probs, logits + p.logits
            extras = {k: v + p.extras[k] for k, v in extras.items() if k in p.extras}
        n = len(parts)
        return Categorical(probs / n, logits / n, {k: v / n for k, v in extras.items()}) if n > 1 else parts[0]


# --------------------------------------------------------------------------- regression

GAUSSIAN_SCORES = ("std", "aleatoric_std", "epistemic_std", "var", "aleatoric_var", "epistemic_var")


def check_level(level: Any, name: str = "level") -> float:
    """``level`` as a float in (0, 1), or a ConfigError naming ``name``."""
    if isinstance(level, bool) or not isinstance(level, (int, float, np.floating, np.integer)) or not 0 < level < 1:
        raise ConfigError(f"`{name}` must be a number in (0, 1) (a central interval's probability mass), got {level!r}")
    return float(level)


def check_probabilities(p: Any, name: str = "p") -> torch.Tensor:
    """``p`` (a number or a sequence of numbers) as a float64 1-D tensor of values in (0, 1)."""
    values = [p] if isinstance(p, (int, float, np.floating, np.integer)) and not isinstance(p, bool) else p
    try:
        arr = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"`{name}` must be a number or a sequence of numbers in (0, 1), got {p!r}") from exc
    if arr.size == 0 or not bool(((arr > 0) & (arr < 1)).all()):
        raise ConfigError(f"`{name}` must hold at least one number, each in (0, 1), got {p!r}")
    return torch.from_numpy(arr)


def check_moment_values(mean: torch.Tensor, var: torch.Tensor) -> None:
    """Raise a one-line DataError unless ``mean`` is finite and ``var`` finite and > 0."""
    if not bool(torch.isfinite(mean.detach()).all()):
        raise DataError("`mean` must be finite, got NaN or infinite values")
    v = var.detach()
    ok = torch.isfinite(v) & (v > 0)
    if not bool(ok.all()):
        raise DataError(f"`var` must be finite and > 0 (variances, not log-variances), got the value {v[~ok][0].item()!r}")


def _f64(x: torch.Tensor) -> torch.Tensor:
    return x.detach().to(torch.float64)


def _mixture_quantile(mean: torch.Tensor, var: torch.Tensor, p: torch.Tensor, tol: float = 1e-14,
                      max_iter: int = 100) -> torch.Tensor:
    """Quantiles ``(L, *E)`` of the uniform mixture of ``N(mean[m], var[m])`` (``(M, *E)``, float64) at ``p`` ``(L,)``.

    Safeguarded Newton on ``g(x) = F(x) - p``, all (level, entry) problems at once, each
    iteration on the problems not yet solved. The mixture's p-quantile lies between the
    smallest and the largest of the members' p-quantiles (F is the mean of the members' CDFs),
    a bracket every iteration narrows. Far from the root (``|g| > 1e-6``) the step is Newton's
    on ``Phi^-1(F(x)) - Phi^-1(p)``, which is linear in x for one Gaussian and nearly so for a
    mixture (plain Newton overshoots in a convex tail); near it, plain Newton on g (whose sign,
    unlike that of the transformed function, is exact there). A step leaving the bracket is
    replaced by the bracket's false-position point, else its midpoint; a bracket that has not
    halved in two iterations is bisected (Newton can cycle around a narrow member). A problem stops at
    ``|g| <= tol``, or when its step or bracket is a few ulps of x (F's resolution in x).
    """
    M, shape = mean.shape[0], mean.shape[1:]
    s = var.sqrt()
    z = torch.special.ndtri(p)  # (L,)
    q = mean.unsqueeze(0) + s.unsqueeze(0) * z.view(-1, *([1] * mean.dim()))  # members' quantiles (L, M, *E)
    if M == 1:
        return q[:, 0]
    L, K = p.shape[0], int(mean[0].numel())
    mu_k, s_k = mean.reshape(M, K), s.reshape(M, K)
    lo, hi = q.min(1).values.reshape(-1), q.max(1).values.reshape(-1)  # (L * K,), problem j = (level j // K, entry j % K)
    mu_bar = mu_k.mean(0)
    sd_bar = (s_k.square().mean(0) + (mu_k - mu_bar).square().mean(0)).sqrt()
    x = torch.minimum(torch.maximum((mu_bar + sd_bar * z.view(-1, 1)).reshape(-1), lo), hi)  # moment-matched start
    g_lo, g_hi = torch.full_like(x, math.nan), torch.full_like(x, math.nan)
    g1, g2 = torch.full_like(x, math.inf), torch.full_like(x, math.inf)  # |g| one and two iterations ago
    level, entry = torch.arange(L * K, device=x.device) // K, torch.arange(L * K, device=x.device) % K
    act = (lo < hi).nonzero().squeeze(1)
    ulps = 4 * torch.finfo(torch.float64).eps
    for _ in range(max_iter):
        if act.numel() == 0:
            break
        xa, pa, za, ka = x[act], p[level[act]], z[level[act]], entry[act]
        mu, sd = mu_k[:, ka], s_k[:, ka]
        u = (xa - mu) / sd  # (M, A)
        f = torch.special.ndtr(u).mean(0)
        g = f - pa
        dens = (torch.exp(-0.5 * u * u) / (math.sqrt(2 * math.pi) * sd)).mean(0)
        below, above = g < 0, g > 0
        la, ha = torch.where(below, xa, lo[act]), torch.where(above, xa, hi[act])
        gla, gha = torch.where(below, g, g_lo[act]), torch.where(above, g, g_hi[act])
        lo[act], hi[act], g_lo[act], g_hi[act] = la, ha, gla, gha
        w = torch.special.ndtri(f.clamp(1e-300, 1 - 1e-16))
        far = -(w - za) * torch.exp(-0.5 * w * w) / (math.sqrt(2 * math.pi) * dens)
        step = torch.where(g.abs() > 1e-6, far, -g / dens)
        res = ulps * (1 + xa.abs())
        done = (g.abs() <= tol) | (step.abs() <= res) | (ha - la <= res)
        newton = xa + step
        secant = la - gla * (ha - la) / (gha - gla)
        secant = torch.where((secant > la) & (secant < ha), secant, 0.5 * (la + ha))
        # |g| not halved in two iterations: Newton is cycling around a narrow member's density
        # spike (it converges much faster than that when it converges); bisect once
        slow = g.abs() > 0.5 * g2[act]
        g2[act], g1[act] = g1[act], g.abs()
        nxt = torch.where((newton > la) & (newton < ha), newton, secant)
        x[act] = torch.where(done, xa, torch.where(slow, 0.5 * (la + ha), nxt))
        act = act[~done]
    return x.view(L, *shape)


@dataclass(frozen=True)
class Gaussian:
    """M members' Gaussian predictive distributions over N examples (regression).

    Member m predicts ``N(mean[m, n], var[m, n])`` for example n; with D target dimensions
    (``(M, N, D)``) each member's D outputs are independent (a diagonal Gaussian). The
    ensemble's predictive is the UNIFORM MIXTURE of the members' Gaussians,
    ``p(y) = 1/M sum_m N(y; mean_m, var_m)`` (Lakshminarayanan, Pritzel & Blundell, "Simple
    and Scalable Predictive Uncertainty Estimation using Deep Ensembles", NeurIPS 2017). It
    is not Gaussian: :meth:`pooled` gives its first two moments (the moment-matched Gaussian),
    while :meth:`cdf`, :meth:`quantile`, :meth:`interval` and the mixture NLL / CRPS of
    :mod:`ensemblekit.metrics.regression` use the mixture itself. With D > 1 the univariate
    quantities (CDF, quantiles, intervals) are those of each output's marginal, itself the
    mixture of the members' Gaussians for that output.

    Attributes:
        mean: members' means ``(M, N)`` or ``(M, N, D)`` (float32 CPU from the evaluation
            pass; any floating dtype is kept as given), finite.
        var: members' variances, the shape of ``mean``, finite and > 0.

    Computed quantities are float64. Construction checks shapes and values (a DataError
    with one line); numpy arrays are accepted and converted.

    Example:
        >>> pd = Gaussian(torch.tensor([[0.0], [2.0]]), torch.tensor([[1.0], [4.0]]))
        >>> pd.pooled()                  # (tensor([1.]), tensor([3.5]))  mean 1, var 2.5 + 1
        >>> lo, hi = pd.interval(0.9)    # the mixture's central 90% interval
    """

    mean: torch.Tensor
    var: torch.Tensor
    kind: ClassVar[str] = "gaussian"

    def __post_init__(self) -> None:
        mean = float_tensor(self.mean, "mean", " of shape (M, N) or (M, N, D)")
        var = float_tensor(self.var, "var", " of shape (M, N) or (M, N, D)")
        if mean.dim() not in (2, 3) or 0 in mean.shape:
            raise DataError(f"`mean` must have shape (M, N) or (M, N, D) with no empty axis, got shape {tuple(mean.shape)}")
        if tuple(var.shape) != tuple(mean.shape):
            raise DataError(f"`var` must have the shape of `mean` {tuple(mean.shape)}, got shape {tuple(var.shape)}")
        check_moment_values(mean, var)
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "var", var.to(mean.device))

    @classmethod
    def _trusted(cls, mean: torch.Tensor, var: torch.Tensor) -> "Gaussian":
        """A predictive from tensors already checked (slices or means of checked ones)."""
        out = object.__new__(cls)
        object.__setattr__(out, "mean", mean)
        object.__setattr__(out, "var", var)
        return out

    @property
    def num_members(self) -> int:
        return int(self.mean.shape[0])

    @property
    def num_examples(self) -> int:
        return int(self.mean.shape[1])

    @property
    def probs(self) -> torch.Tensor:
        """Not defined: a regression predictive has no class probabilities (the one-line error
        every ``predict_proba`` of a regression predictor gives)."""
        raise DataError("this predictor regresses: it has no class probabilities; use ensemblekit.predictive(pred, x) "
                        "(or method.predictive(x)) for its members' Gaussian means and variances")

    @property
    def num_outputs(self) -> int:
        """D, the target dimensions (1 for ``(M, N)``)."""
        return int(self.mean.shape[2]) if self.mean.dim() == 3 else 1

    @property
    def example_shape(self) -> tuple[int, ...]:
        """The targets' shape: ``(N,)`` or ``(N, D)``."""
        return tuple(self.mean.shape[1:])

    def aleatoric(self) -> torch.Tensor:
        """The mean of the members' variances, ``(N,)`` or ``(N, D)`` float64 (the noise the members predict)."""
        return _f64(self.var).mean(0)

    def epistemic(self) -> torch.Tensor:
        """The population variance of the members' means (divided by M), ``(N,)`` or ``(N, D)`` float64."""
        mu = _f64(self.mean)
        return (mu - mu.mean(0)).square().mean(0)

    def pooled(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The mixture's mean and variance, each ``(N,)`` or ``(N, D)`` float64.

        mean = ``mean_m mu_m``; variance = ``mean_m var_m + mean_m (mu_m - mean)^2``
        (aleatoric + epistemic, the law of total variance). Together they are the
        moment-matched Gaussian, not the mixture.
        """
        return _f64(self.mean).mean(0), self.aleatoric() + self.epistemic()

    def prefix(self, k: int) -> "Gaussian":
        """The predictive of the first ``k`` members (1 <= k <= M)."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= self.num_members:
            raise ConfigError(f"`k` must be an integer in [1, {self.num_members}] (the number of members), got {k!r}")
        return Gaussian._trusted(self.mean[:k], self.var[:k])

    def members(self, indices: Sequence[int]) -> "Gaussian":
        """The predictive of the chosen members, in the given order."""
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        if idx.numel() == 0 or int(idx.min()) < -self.num_members or int(idx.max()) >= self.num_members:
            raise ConfigError(f"`indices` must name at least one member in [0, {self.num_members - 1}], got {list(indices)!r}")
        return Gaussian._trusted(self.mean[idx.to(self.mean.device)], self.var[idx.to(self.mean.device)])

    def scores(self, names: Sequence[str] = GAUSSIAN_SCORES) -> dict[str, torch.Tensor]:
        """Per-example uncertainty scores ``(N,)`` float64, higher = more uncertain (OOD, selective prediction).

        - ``std``: the total predictive std ``sqrt(aleatoric + epistemic)``;
        - ``aleatoric_std``: ``sqrt(mean_m var_m)``; ``epistemic_std``: the std of the members' means;
        - ``var``, ``aleatoric_var``, ``epistemic_var``: the same as variances.

        With D > 1 each score is summed over the D outputs (the stds output by output, so
        ``std`` is the sum of the marginal stds; the variances give the trace).

        Args:
            names: a subset of :data:`GAUSSIAN_SCORES` (default all); a single name may be a string.

        Raises:
            ConfigError: an unknown or empty list of names.
        """
        names = (names,) if isinstance(names, str) else tuple(dict.fromkeys(names))
        unknown = [n for n in names if n not in GAUSSIAN_SCORES]
        if not names or unknown:
            raise ConfigError(f"`names` must name scores from {GAUSSIAN_SCORES}, got {list(names)!r}")
        alea, epi = self.aleatoric(), self.epistemic()
        parts = {"aleatoric_var": alea, "epistemic_var": epi, "var": alea + epi}
        out = {}
        for n in names:
            v = parts[n.replace("_std", "_var") if n != "std" else "var"]
            v = v.sqrt() if n.endswith("std") else v
            out[n] = v.sum(-1) if v.dim() == 2 else v
        return out

    def cdf(self, y: torch.Tensor) -> torch.Tensor:
        """The mixture's CDF at ``y`` (the shape of an example set, ``(N,)`` or ``(N, D)``; or with
        leading axes ``(..., N[, D])``): ``mean_m Phi((y - mu_m) / sigma_m)``, float64, each
        output's marginal. Only ``y``'s shape is checked here (the metrics check its values)."""
        y = _f64(torch.as_tensor(y)).to(self.mean.device)
        lead = y.dim() - len(self.example_shape)
        if lead < 0 or tuple(y.shape[lead:]) != self.example_shape:
            raise DataError(f"`y` must have shape (..., {', '.join(map(str, self.example_shape))}), got shape {tuple(y.shape)}")
        mu = _f64(self.mean).view(self.mean.shape[:1] + (1,) * lead + self.example_shape)
        s = _f64(self.var).sqrt().view(mu.shape)
        return torch.special.ndtr((y.unsqueeze(0) - mu) / s).mean(0)

    def quantile(self, p: float | Sequence[float]) -> torch.Tensor:
        """The mixture's p-quantiles, float64: ``(N[, D])`` for a number, ``(L, N[, D])`` for L of them.

        Solved per example (and output) by safeguarded Newton on the mixture CDF, to
        ``|F(x) - p| <= 1e-13``, all examples at once.

        Raises:
            ConfigError: a probability outside (0, 1).
        """
        pp = check_probabilities(p).to(self.mean.device)
        q = _mixture_quantile(_f64(self.mean), _f64(self.var), pp)
        return q[0] if np.ndim(p) == 0 else q

    def interval(self, level: float = 0.9) -> tuple[torch.Tensor, torch.Tensor]:
        """The mixture's central interval of mass ``level``: its ``(1 - level)/2`` and ``(1 + level)/2``
        quantiles ``(lo, hi)``, each ``(N,)`` or ``(N, D)`` float64 (per output with D > 1).

        Raises:
            ConfigError: ``level`` outside (0, 1).
        """
        level = check_level(level)
        q = self.quantile([(1 - level) / 2, (1 + level) / 2])
        return q[0], q[1]

    def moment_matched_interval(self, level: float = 0.9) -> tuple[torch.Tensor, torch.Tensor]:
        """The central interval of the moment-matched Gaussian ``N(pooled mean, pooled var)``:
        ``mean ± Phi^-1((1 + level)/2) sqrt(var)`` (cheap, but not the mixture's: see :meth:`interval`)."""
        level = check_level(level)
        mu, var = self.pooled()
        half = float(torch.special.ndtri(torch.tensor((1 + level) / 2, dtype=torch.float64))) * var.sqrt()
        return mu - half, mu + half

    @staticmethod
    def mean_of(parts: Sequence["Gaussian"]) -> "Gaussian":
        """The mean of predictives of the same examples (test-time augmentation), summed in order.

        Each member's Gaussian becomes the one with the mean of its means and the mean of its
        variances over the parts (the spread of its means across transforms is not added:
        every member stays one Gaussian, and the ensemble a mixture of M of them).

        Raises:
            DataError: no parts, or parts of different shapes.
        """
        if not parts:
            raise DataError("`parts` must hold at least one Gaussian predictive, got none")
        shape = tuple(parts[0].mean.shape)
        if any(tuple(p.mean.shape) != shape for p in parts):
            raise DataError(f"`parts` must share one shape, got shapes {[tuple(p.mean.shape) for p in parts]}")
        mean, var = parts[0].mean, parts[0].var
        for p in parts[1:]:
            mean, var = mean + p.mean, var + p.var
        n = len(parts)
        return Gaussian._trusted(mean / n, var / n) if n > 1 else parts[0]
