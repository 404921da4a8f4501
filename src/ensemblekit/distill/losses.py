"""The losses a student learns its teacher with: soft labels, a Dirichlet over the members, a Gaussian.

Each takes the student's outputs ``(M, B, K)`` (M = 1 for one network, the heads of a Hydra
student otherwise) and the teacher's targets for the same examples, and returns one loss per
student member ``(M,)`` (the engine's loss contract), averaged over the examples.

- :func:`kd_loss`: Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network",
  2015. ``T² · mean_b KL(q_T ‖ softmax(z / T))`` with ``q_T = softmax(log p / T)`` the
  teacher's probabilities at temperature ``T``; the ``T²`` keeps the gradient's scale
  independent of ``T`` (the gradient of the KL term alone shrinks as ``1/T²``).
- :func:`dirichlet_nll`: Malinin, Mlodozeniec & Gales, "Ensemble Distribution Distillation",
  ICLR 2020 (EnD²). The student's outputs are the log-concentrations of a Dirichlet,
  ``α = exp(z / T)``, and the loss is the negative log-likelihood of every member's
  probability vector under it, ``-mean_{m,b} log Dir(π_mb; α_b)``, the members' vectors
  smoothed towards uniform by ``ε`` (so that none sits on the simplex's boundary) and taken
  at temperature ``T`` like the KD targets. :func:`end2_loss` uses it as written (``joint``) or,
  by default, for the Dirichlet's precision alone beside KD for its mean (``split``).
- :func:`gaussian_kl`: regression. The teacher's mixture is matched by its mean and total
  variance, ``KL(N(μ_T, σ_T²) ‖ N(μ_s, σ_s²))`` per target (Lakshminarayanan, Pritzel & Blundell,
  NeurIPS 2017 pool the members the same way).

Per-member targets (Hydra: head m learns member m) are given with the student's member axis.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import ConfigError

__all__ = ["soften", "kd_loss", "dirichlet_nll", "end2_loss", "precision_only", "dirichlet_concentrations", "gaussian_kl", "MAX_LOG_CONCENTRATION"]

MAX_LOG_CONCENTRATION = 30.0
"""Log-concentrations are clamped to ``[-MAX, MAX]`` (``exp(30)`` is about 1e13: far beyond any
precision a student needs, and finite in float32)."""


def _check_temperature(temperature: float) -> float:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0 or math.isinf(temperature):
        raise ConfigError(f"the distillation temperature must be a finite number > 0, got {temperature!r}")
    return float(temperature)


def soften(probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """``softmax(log p / T)`` along the last axis: ``p^(1/T)`` renormalised (``T = 1``: ``p`` itself)."""
    t = _check_temperature(temperature)
    if t == 1.0:
        return probs
    return torch.softmax(torch.log(probs.clamp_min(1e-12)) / t, dim=-1)


def _align(target: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``target`` ``(B, K)`` or ``(M, B, K)`` broadcast to ``out`` ``(M, B, K)``."""
    if target.dim() == out.dim() - 1:
        target = target.unsqueeze(0)
    return target.to(out.device, out.dtype).expand_as(out)


def kd_loss(logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Knowledge distillation: ``T² · mean_b KL(softmax(log p / T) ‖ softmax(z / T))`` per student member.

    Args:
        logits: the student's ``(M, B, C)``.
        teacher_probs: the teacher's probabilities ``(B, C)`` (every member learns the same) or
            ``(M, B, C)`` (member m learns row m).
        temperature: ``T > 0``.

    Returns:
        ``(M,)``.

    Example:
        >>> kd_loss(torch.zeros(1, 1, 2), torch.tensor([[0.5, 0.5]]))
        tensor([0.])
    """
    t = _check_temperature(temperature)
    q = soften(_align(teacher_probs, logits), t)
    log_s = F.log_softmax(logits / t, dim=-1)
    kl = (q * (torch.log(q.clamp_min(1e-12)) - log_s)).sum(-1)  # 0 log 0 = 0: q = 0 terms vanish
    return t * t * kl.mean(-1)


def dirichlet_concentrations(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """A Prior Network's concentrations ``α = exp(z / T)`` (log-concentrations clamped to ±:data:`MAX_LOG_CONCENTRATION`)."""
    t = _check_temperature(temperature)
    return torch.exp((logits / t).clamp(-MAX_LOG_CONCENTRATION, MAX_LOG_CONCENTRATION))


def dirichlet_nll(logits: torch.Tensor, member_probs: torch.Tensor, temperature: float = 1.0, smoothing: float = 1e-4) -> torch.Tensor:
    """EnD²: ``-mean_{k,b} log Dir(π_kb; exp(z_b / T))`` per student member.

    ``log Dir(π; α) = log Γ(α₀) - Σ_c log Γ(α_c) + Σ_c (α_c - 1) log π_c`` with ``α₀ = Σ_c α_c``;
    ``π_kb`` is teacher member k's probability vector on example b at temperature ``T``,
    smoothed as ``(1 - ε) π + ε / C``.

    Args:
        logits: the student's log-concentrations ``(M, B, C)``.
        member_probs: the teacher members' probabilities ``(K, B, C)`` (``(K, M, B, C)`` when each
            student member has its own batch).
        temperature: ``T > 0``. smoothing: ``ε`` in ``[0, 1)``.

    Returns:
        ``(M,)``.
    """
    if not 0 <= smoothing < 1:
        raise ConfigError(f"the Dirichlet smoothing must be in [0, 1), got {smoothing!r}")
    c = logits.shape[-1]
    pi = soften(member_probs.to(logits.device, logits.dtype), temperature)
    pi = (1 - smoothing) * pi + smoothing / c
    alpha = dirichlet_concentrations(logits, temperature)  # (M, B, C)
    log_pi = torch.log(pi.clamp_min(1e-30))  # (K, B, C)
    norm = torch.lgamma(alpha.sum(-1)) - torch.lgamma(alpha).sum(-1)  # (M, B)
    # sum_c (alpha_c - 1) log pi_kc, averaged over the K members: linear in log pi, so its mean suffices
    mean_log_pi = log_pi.mean(0)  # (B, C), or (M, B, C) for per-member batches
    if mean_log_pi.dim() == alpha.dim() - 1:
        mean_log_pi = mean_log_pi.unsqueeze(0)
    fit = ((alpha - 1) * mean_log_pi).sum(-1)  # (M, B)
    return -(norm + fit).mean(-1)


def precision_only(logits: torch.Tensor) -> torch.Tensor:
    """Log-concentrations equal to ``logits`` whose gradient moves every class's logit alike.

    ``log α = z`` splits into the mean ``softmax(z)`` and the log-precision ``logsumexp(z)``; a shift
    of all logits by the same amount changes the precision only. The returned tensor has the
    values of ``z`` and passes a gradient ``g`` back as ``mean_c(g)`` to every logit: a loss of it
    trains the Dirichlet's precision and leaves its mean to another term."""
    fixed = logits.detach()
    return fixed + (logits - fixed).mean(-1, keepdim=True)


def end2_loss(logits: torch.Tensor, member_probs: torch.Tensor, temperature: float = 1.0, smoothing: float = 1e-4,
              mode: str = "split", precision_weight: float = 0.01) -> torch.Tensor:
    """The EnD² student's loss per student member ``(M,)``.

    ``mode="joint"``: :func:`dirichlet_nll` (Malinin et al.'s loss as written). ``mode="split"``
    (default): the Dirichlet's mean ``softmax(z)`` learns the members' mean by :func:`kd_loss` at
    ``temperature``, and its precision learns the members' spread by ``precision_weight · (1/C) ·``
    the Dirichlet NLL through :func:`precision_only` (docs/methods.md, distill: fitted jointly, an
    overfit teacher's near one-hot members make the NLL prefer a Dirichlet that loves every corner
    of the simplex, and the mean stops following the classes).
    """
    if mode == "joint":
        return dirichlet_nll(logits, member_probs, temperature, smoothing)
    if mode != "split":
        raise ConfigError(f"the EnD² mode must be 'split' or 'joint', got {mode!r}")
    mean = member_probs.mean(0)
    spread = dirichlet_nll(precision_only(logits), member_probs, 1.0, smoothing)
    return kd_loss(logits, mean, temperature) + float(precision_weight) * spread / logits.shape[-1]


def gaussian_kl(mean: torch.Tensor, var: torch.Tensor, target_mean: torch.Tensor, target_var: torch.Tensor) -> torch.Tensor:
    """``KL(N(μ_T, σ_T²) ‖ N(μ_s, σ_s²))`` per student member, averaged over examples and targets.

    ``0.5 · (log σ_s² - log σ_T² + (σ_T² + (μ_T - μ_s)²) / σ_s² - 1)``; zero exactly when the
    student's Gaussian is the teacher's.

    Args:
        mean, var: the student's ``(M, B)`` or ``(M, B, D)``.
        target_mean, target_var: the teacher's, without (every member learns the same) or with the
            member axis.

    Returns:
        ``(M,)``.
    """
    tm = target_mean.to(mean.device, mean.dtype)
    tv = target_var.to(mean.device, mean.dtype)
    if tm.dim() == mean.dim() - 1:
        tm, tv = tm.unsqueeze(0), tv.unsqueeze(0)
    kl = 0.5 * (torch.log(var) - torch.log(tv) + (tv + (tm - mean).square()) / var - 1)
    return kl.reshape(kl.shape[0], -1).mean(-1)
