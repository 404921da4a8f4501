"""Training the family and its baselines, and measuring accuracy vs complexity and pruned share.

Three trainers share one engine (:class:`~ensemblekit.training.engine.Trainer`, so
checkpoints, resume and the NaN check are the library's):

- :func:`train_hyper`: one hypernetwork over the whole lambda range;
- :func:`train_separate`: one variational net per lambda (all trained side by side in
  one vectorised pass, each with its own fixed lambda; cost = one run per lambda);
- :func:`train_l2`: one ordinary net per lambda with the penalty
  ``lambda * ||w||^2 / (2 N_train)`` (the small-sigma limit of the KL term to N(0, 1),
  so the two baselines are on the same scale of lambda).

:func:`pruning_curve` gives test accuracy ``(L, F)`` for L lambdas and F pruned shares.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.dataset import Data, Split
from ..ensemble import Ensemble
from ..errors import ConfigError
from ..training.checkpoint import RunDir
from ..training.config import TrainConfig
from ..training.engine import Trainer
from .bayes import weight_names
from .forms import SeparateForm, create_form
from .model import HyperModel
from .prune import magnitude_scores, prune_weights, snr_scores

__all__ = ["train_hyper", "train_separate", "train_l2", "pruning_curve", "prune_ensemble", "family_kl", "accuracy_per_member"]


def _fit(model: Any, data: Data, train: TrainConfig, seed: int, run: RunDir | None, stage: str,
         loss_for: Callable[[Any], Callable[..., torch.Tensor]], resume: bool, callbacks: Sequence[Any]) -> tuple[Any, dict[str, Any]]:
    if train.data_order != "shared":
        raise ConfigError(f"varhyper: train.data_order must be 'shared', got {train.data_order!r}")
    trainer = Trainer(model, data, train, seed=seed, run=run, stage=stage, loss_for=loss_for, resume=resume, callbacks=callbacks)
    t0 = time.perf_counter()
    trainer.fit()
    return trainer.model, {"stage": stage, "history": trainer.history, "train_s": trainer.wall_s, "fit_s": time.perf_counter() - t0,
                           "cost": trainer.cost()}


def train_hyper(factory: Callable[[], nn.Module], data: Data, train: TrainConfig, *, form: str = "linear", seed: int = 0,
                run: RunDir | None = None, resume: bool = True, rank: int = 1, hidden: int = 50, pivots: int = 6,
                callbacks: Sequence[Any] = (), **hyper_kw: Any) -> tuple[HyperModel, dict[str, Any]]:
    """Train one hypernetwork of ``form`` (linear | lowrank | piecewise); returns it and
    ``{stage, history, train_s, fit_s, cost}`` (``cost``: the engine's :meth:`~ensemblekit.training.Trainer.cost`)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        template = factory()
        model = HyperModel(template, create_form(form, rank=rank, hidden=hidden, pivots=pivots), spec=getattr(factory, "spec", None), **hyper_kw)
    n = len(data.train)
    return _fit(model, data, train, seed, run, f"hyper_{form}", lambda m: m.objective(n), resume, callbacks)


def train_separate(factory: Callable[[], nn.Module], data: Data, train: TrainConfig, lambdas: Sequence[float], *, seed: int = 0,
                   run: RunDir | None = None, resume: bool = True, callbacks: Sequence[Any] = (), **hyper_kw: Any) -> tuple[HyperModel, dict[str, Any]]:
    """One variational net per lambda (fixed), trained side by side; returns them as a HyperModel."""
    hyper_kw = {k: v for k, v in hyper_kw.items() if k not in ("samples", "eval_lambdas")}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        template = factory()
        probe = HyperModel(template, create_form("linear"), eval_lambdas=lambdas, **hyper_kw)  # only to encode the lambdas
        levels = probe.encode(torch.tensor([float(v) for v in lambdas])).tolist()
        model = HyperModel(template, SeparateForm(levels), fixed=lambdas, eval_lambdas=lambdas, spec=getattr(factory, "spec", None), **hyper_kw)
    n = len(data.train)
    return _fit(model, data, train, seed, run, "separate", lambda m: m.objective(n), resume, callbacks)


def train_l2(factory: Callable[[], nn.Module], data: Data, train: TrainConfig, lambdas: Sequence[float], *, seed: int = 0,
             run: RunDir | None = None, resume: bool = True, callbacks: Sequence[Any] = ()) -> tuple[Ensemble, dict[str, Any]]:
    """One ordinary net per lambda with loss ``CE + lambda ||w||^2 / (2 N_train)`` (same init seed for all)."""
    ens = Ensemble.from_factory(factory, seeds=[seed] * len(lambdas))
    for info, lam in zip(ens.members_info, lambdas):
        info["lambda"] = float(lam)
    lam_t = torch.tensor([float(v) for v in lambdas])
    n = len(data.train)

    def loss_for(model: Ensemble) -> Callable[..., torch.Tensor]:
        params = model.groups[0].params  # the trained copy's own tensors

        def loss(logits: torch.Tensor, batch: Any) -> torch.Tensor:
            k, b, c = logits.shape
            ce = F.cross_entropy(logits.reshape(k * b, c), batch.y.repeat(k), reduction="none").reshape(k, b).mean(1)
            sq = sum(p.pow(2).flatten(1).sum(1) for p in params.values())
            return ce + lam_t.to(ce.device) * sq / (2 * n)

        return loss

    return _fit(ens, data, train, seed, run, "l2", loss_for, resume, callbacks)


def accuracy_per_member(ens: Ensemble, split: Split) -> np.ndarray:
    """Test accuracy of each member, shape ``(M,)``."""
    probs = ens.predict_proba(split)
    y = split.tensors()[1].to(probs.device)
    return (probs.argmax(-1) == y).float().mean(-1).cpu().numpy()


@torch.no_grad()
def prune_ensemble(ens: Ensemble, fraction: float) -> Ensemble:
    """A copy of a one-group ensemble (the L2 nets) with each member's layers pruned by ``mu^2``."""
    if len(ens.groups) != 1:
        raise ConfigError(f"magnitude pruning takes an ensemble of one architecture, got {len(ens.groups)} groups")
    group = ens.groups[0]
    mu = {k: v.detach() for k, v in group.params.items()}
    w = prune_weights(mu, magnitude_scores(mu), float(fraction), weight_names(group.template))
    params = type(group.params)((k, w[k].requires_grad_(group.params[k].requires_grad)) for k in group.params)
    return Ensemble([type(group)(group.template, params, group.buffers, group.spec)], ens.members_info)


@torch.no_grad()
def pruning_curve(model: HyperModel | Ensemble, lambdas: Sequence[float], fractions: Sequence[float], split: Split) -> np.ndarray:
    """Accuracy ``(L, F)`` on ``split`` of the mean nets at ``lambdas`` pruned by each share.

    A HyperModel is scored by ``mu^2 / sigma^2``; an Ensemble (the L2 nets, one member per
    lambda in the same order) by ``mu^2``.
    """
    if not isinstance(model, HyperModel):  # an Ensemble of L2 nets
        if model.num_members != len(lambdas) or len(model.groups) != 1:
            raise ConfigError(f"an L2 family needs one member per lambda ({len(lambdas)}), got {model.num_members}")
        build = lambda f: prune_ensemble(model, f)  # noqa: E731
    else:
        mu, ls = model.posterior(lambdas)
        scores, names = snr_scores(mu, ls), weight_names(model.template)
        build = lambda f: model.members(lambdas, weights=prune_weights(mu, scores, f, names))  # noqa: E731
    out = np.zeros((len(lambdas), len(fractions)))
    for j, f in enumerate(fractions):
        out[:, j] = accuracy_per_member(build(float(f)), split)
    return out


@torch.no_grad()
def family_kl(model: HyperModel, lambdas: Sequence[float]) -> np.ndarray:
    """``KL(q_lambda || p)`` per lambda, shape ``(L,)``."""
    return model.kl(lambdas).cpu().numpy()
