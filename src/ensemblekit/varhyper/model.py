"""The hypernetwork G(lambda) over a target network, with the Trainer's small surface (docs/methods.md, varhyper).

In train mode every call draws K complexities ``lambda_k = 10^u_k``, ``u_k ~ U(L, R)``,
generates ``(mu, log_sigma)`` for each, draws one reparameterised weight sample per
lambda (one sample per mini-batch) and returns the K networks' logits ``(K, B, C)``:
the K "members" the Trainer sees. :meth:`objective` turns them into
``mean_k [CE_k + lambda_k * KL_k / N_train]`` (divided by K so that the Trainer's sum
over members is the mean). In eval mode the members are the networks of the mean
weights at ``eval_lambdas``.

Encoding: ``l = (ln lambda - ln lambda_min) / (ln lambda_max - ln lambda_min)``, which
equals ``(u - L) / (R - L)`` for ``lambda = 10^u``.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..ensemble import Ensemble, MemberGroup
from ..errors import ConfigError, DataError
from ..serialization import copy_state_
from ..training.protocol import ParamGroup
from .bayes import kl_to_prior, sample_weights, variational_shapes
from .forms import Form

__all__ = ["HyperModel", "DEFAULT_GRID"]

DEFAULT_GRID = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0)


class HyperModel:
    """A hypernetwork ``form`` generating the Gaussian posterior of ``template`` for each lambda.

    Args:
        template: the target network (Linear/Conv1d/Conv2d layers; its initial weights
            become the initial means).
        form: a :mod:`~ensemblekit.varhyper.forms` object (linear, lowrank, piecewise,
            separate).
        log10_range: ``(L, R)``, lambda in ``[10^L, 10^R]`` (default ``(-3, 2)``).
        samples: K lambdas per mini-batch (>= 1; default 5). A ``SeparateForm`` always
            trains all its levels (``fixed`` lambdas) instead.
        prior_std: the prior's standard deviation (> 0; default 1.0).
        init_log_sigma: initial log-std of every weight (default -3).
        eval_lambdas: the lambdas of the eval-mode members (default the grid 1e-3..1e2).
        spec: the template's JSON model spec (kept by the Ensembles it produces).
        fixed: lambdas trained at every step instead of sampling (the per-lambda baseline).
        weighting: ``"none"`` (the paper's objective, the plain mean over the K lambdas) or
            ``"balanced"``: each lambda's term divided by ``1 + lambda``. Per lambda the
            minimiser is unchanged (a positive factor), so the family of optimal posteriors
            is the same; what changes is how a restricted form (linear, low-rank) trades one
            lambda against another: without it the terms with lambda near ``10^R`` are up
            to ``10^(R-L)`` times larger and dictate the shared parameters.

    Example:
        >>> hm = HyperModel(model, LinearForm())
        >>> hm.members([0.01, 1.0]).predict_proba(x).shape   # (2, N, C)
    """

    def __init__(self, template: nn.Module, form: Form, *, log10_range: Sequence[float] = (-3.0, 2.0), samples: int = 5,
                 prior_std: float = 1.0, init_log_sigma: float = -3.0, eval_lambdas: Sequence[float] = DEFAULT_GRID,
                 spec: dict[str, Any] | None = None, fixed: Sequence[float] | None = None, weighting: str = "none") -> None:
        lo, hi = (float(v) for v in log10_range)
        if not lo < hi:
            raise ConfigError(f"log10_range must be (L, R) with L < R, got {tuple(log10_range)}")
        if samples < 1 or prior_std <= 0:
            raise ConfigError(f"samples must be >= 1 and prior_std > 0, got samples={samples}, prior_std={prior_std}")
        if weighting not in ("none", "balanced"):
            raise ConfigError(f"weighting must be 'none' or 'balanced', got {weighting!r}")
        self.weighting = weighting
        self.shapes = variational_shapes(template)
        self.template, self.form, self.spec = template, form, spec
        self.lo, self.hi, self.prior_std, self.init_log_sigma = lo, hi, float(prior_std), float(init_log_sigma)
        self.fixed = [float(v) for v in fixed] if fixed is not None else None
        self.samples = len(self.fixed) if self.fixed is not None else int(samples)
        self.eval_lambdas = [float(v) for v in eval_lambdas]
        for lam in [*self.eval_lambdas, *(self.fixed or [])]:
            self._check_lambda(lam)
        init = dict(template.named_parameters())
        targets = {}
        for k in self.shapes:
            targets[f"{k}.mu"] = init[k].detach().clone()
            targets[f"{k}.log_sigma"] = torch.full_like(init[k], self.init_log_sigma)
        self.leaves = OrderedDict((k, v.detach().clone().requires_grad_(True)) for k, v in form.init(targets).items())
        self._groups: dict[int, MemberGroup] = {}
        self.training = True
        self.last_lambdas: torch.Tensor | None = None
        self.last_kl: torch.Tensor | None = None

    # ----------------------------------------------------------------- lambda <-> l
    def _check_lambda(self, lam: float) -> None:
        if not 10**self.lo * (1 - 1e-9) <= lam <= 10**self.hi * (1 + 1e-9):
            raise ConfigError(f"lambda must be in [{10**self.lo:g}, {10**self.hi:g}] (log10_range), got {lam:g}")

    def encode(self, lambdas: torch.Tensor) -> torch.Tensor:
        """``l = (log10 lambda - L) / (R - L)`` in [0, 1]."""
        return (torch.log10(lambdas) - self.lo) / (self.hi - self.lo)

    def sample_lambdas(self) -> torch.Tensor:
        """K training lambdas: log-uniform draws, or the fixed levels."""
        if self.fixed is not None:
            return torch.tensor(self.fixed, device=self.device)
        u = self.lo + (self.hi - self.lo) * torch.rand(self.samples, device=self.device)
        return torch.pow(10.0, u)

    # ----------------------------------------------------------------- posterior
    def posterior(self, lambdas: Sequence[float] | torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """``(mu, log_sigma)`` of every parameter at ``lambdas``: dicts name -> ``(K, *shape)``."""
        lam = torch.as_tensor(lambdas, dtype=torch.float32, device=self.device).reshape(-1)
        g = self.form.generate(self.leaves, self.encode(lam))
        return {k: g[f"{k}.mu"] for k in self.shapes}, {k: g[f"{k}.log_sigma"] for k in self.shapes}

    def kl(self, lambdas: Sequence[float] | torch.Tensor) -> torch.Tensor:
        """``KL(q_lambda || p)`` per lambda, shape ``(K,)``."""
        mu, ls = self.posterior(lambdas)
        return sum(kl_to_prior(mu[k], ls[k], self.prior_std, dims=1) for k in self.shapes)

    def _forward(self, weights: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        # The library's stacked forward (grouped ops for common layers, vmap(functional_call)
        # otherwise) with the generated weights; one placeholder group per K, built once.
        k = next(iter(weights.values())).shape[0]
        group = self._groups.get(k)
        if group is None:
            stub = OrderedDict((n, torch.empty(k, *s, device=self.device)) for n, s in self.shapes.items())
            group = self._groups[k] = MemberGroup(self.template, stub, OrderedDict(), self.spec)
        return group.forward(x, params=dict(weights))

    def __call__(self, x: torch.Tensor, per_member: bool = False, params: Any = None) -> torch.Tensor:
        """Logits ``(K, B, C)``: K sampled lambdas (train) or ``eval_lambdas`` at the means (eval)."""
        if params is not None:
            raise ConfigError("varhyper takes no external parameters (optimizer.per_member does not apply)")
        if per_member:
            raise ConfigError("varhyper: data_order must be 'shared' (all lambdas see the same mini-batch)")
        lam = self.sample_lambdas() if self.training else torch.tensor(self.eval_lambdas, device=self.device)
        mu, ls = self.posterior(lam)
        weights = {k: sample_weights(mu[k], ls[k]) for k in self.shapes} if self.training else mu
        self.last_lambdas = lam
        self.last_kl = sum(kl_to_prior(mu[k], ls[k], self.prior_std, dims=1) for k in self.shapes)
        return self._forward(weights, x)

    forward = __call__

    def objective(self, num_train: int) -> Callable[[torch.Tensor, Any], torch.Tensor]:
        """Loss ``(logits (K,B,C), batch) -> (K,)``: ``(CE_k + lambda_k KL_k / N_train) / K``
        (divided by ``1 + lambda_k`` as well when ``weighting="balanced"``)."""
        if num_train < 1:
            raise DataError(f"num_train must be >= 1, got {num_train}")

        def loss(logits: torch.Tensor, batch: Any) -> torch.Tensor:
            k, b, c = logits.shape
            ce = F.cross_entropy(logits.reshape(k * b, c), batch.y.repeat(k), reduction="none").reshape(k, b).mean(1)
            per_lambda = ce + self.last_lambdas * self.last_kl / num_train
            if self.weighting == "balanced":
                per_lambda = per_lambda / (1.0 + self.last_lambdas)
            return per_lambda / k

        return loss

    # ----------------------------------------------------------------- models out of the family
    @torch.no_grad()
    def members(self, lambdas: Sequence[float], weights: Mapping[str, torch.Tensor] | None = None) -> Ensemble:
        """The mean networks at ``lambdas`` as one stacked :class:`Ensemble` (M = len(lambdas)).

        ``weights`` (name -> ``(M, *shape)``) replaces the means (e.g. pruned means)."""
        lambdas = [float(v) for v in lambdas]
        for lam in lambdas:
            self._check_lambda(lam)
        if weights is None:
            weights = self.posterior(lambdas)[0]
        params = OrderedDict((k, weights[k].detach().clone()) for k in self.shapes)
        group = MemberGroup(copy.deepcopy(self.template), params, OrderedDict(), self.spec)
        return Ensemble([group], [{"lambda": lam, "form": getattr(self.form, "name", "?")} for lam in lambdas])

    # ----------------------------------------------------------------- the trainable-model protocol
    @property
    def num_members(self) -> int:
        return self.samples

    def param_groups(self) -> list[ParamGroup]:
        """The hypernetwork's parameters: one group shared by the K sampled networks, never
        penalised (the KL term is the family's regulariser)."""
        return [ParamGroup("hypernetwork", self.leaves, members=None, regularized=False)]

    def member_slices(self) -> dict[str, slice | None]:
        return {k: None for k in self.leaves}

    @property
    def device(self) -> torch.device:
        return next(iter(self.leaves.values())).device

    def parameters(self) -> list[torch.Tensor]:
        return list(self.leaves.values())

    def train(self, mode: bool = True) -> "HyperModel":
        self.training = mode
        self.template.train(mode)
        return self

    def eval(self) -> "HyperModel":
        return self.train(False)

    def to(self, device: torch.device | str) -> "HyperModel":
        """A copy on ``device`` (new leaf tensors); this model is unchanged."""
        out = copy.copy(self)
        out.template = copy.deepcopy(self.template).to(device)
        out._groups = {}
        out.leaves = OrderedDict((k, v.detach().to(device).clone().requires_grad_(True)) for k, v in self.leaves.items())
        return out

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return dict(self.leaves)

    def load_state_tensors(self, tensors: Mapping[str, torch.Tensor]) -> None:
        copy_state_(self.leaves, tensors, "saved hypernetwork state")

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Inference logits ``(len(eval_lambdas), B, C)`` of the mean networks at ``eval_lambdas``."""
        return self.members(self.eval_lambdas).train(self.training).logits(x)

    @torch.no_grad()
    def predict_proba(self, x: Any, batch_size: int = 1024) -> torch.Tensor:
        """Probabilities ``(M, N, C)`` of the mean networks at ``eval_lambdas``."""
        return self.members(self.eval_lambdas).predict_proba(x, batch_size=batch_size)

    def __repr__(self) -> str:
        return f"HyperModel({getattr(self.form, 'name', '?')}, lambda in [1e{self.lo:g}, 1e{self.hi:g}], K={self.samples})"
