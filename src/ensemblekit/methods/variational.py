"""The per-lambda baselines of the variational hypernetwork, as registered methods.

- ``variational``: one variational network (Gaussian posterior, the same objective as the
  hypernetwork's at a fixed lambda) per lambda in ``lambdas``, trained side by side;
- ``l2_nets``: one ordinary network per lambda with the penalty
  ``lambda * ||w||^2 / (2 N_train)`` (the small-sigma limit of the KL term to N(0, 1), so
  both baselines sit on the hypernetwork's scale of lambda).

Both cost one network per lambda per step (the hypernetwork: ``samples`` networks per
step for every lambda at once). Members are the networks at ``lambdas`` (means for the
variational nets), optionally pruned (``prune``; by ``mu^2 / sigma^2``, or ``mu^2`` for L2).
Paper: Grebenkova, Bakhteev & Strijov (MIPT, 2020); Graves (NeurIPS 2011). ``docs/methods.md``.
"""

from __future__ import annotations

from typing import Any

from ..data.dataset import Data
from ..ensemble import Ensemble
from ..models.registry import ModelFactory
from ..training.checkpoint import RunDir
from ..varhyper.family import prune_ensemble, train_l2, train_separate
from .base import register_method
from .varhyper import FamilyMethod

__all__ = ["Variational", "L2Nets"]


@register_method("variational")
class Variational(FamilyMethod):
    """Separately trained variational networks, one per lambda (the family's baseline).

    Each has its own Gaussian posterior ``N(mu, sigma^2)`` (init log-sigma ``init_log_sigma``)
    and minimises ``CE(f(x; w ~ q)) + lambda KL(q || N(0, prior_std^2)) / N_train``
    (divided by ``1 + lambda`` with ``weighting: balanced``), one reparameterised sample per
    mini-batch; all start from the same initial means.

    Args: those of :class:`~ensemblekit.methods.varhyper.VarHyper` except ``form``,
    ``samples``, ``rank``, ``hidden``, ``pivots`` (unused here).
    """

    def _trainable(self, factory: ModelFactory, data: Data) -> Ensemble:
        """Per epoch: one network per lambda."""
        return Ensemble.from_factory(factory, members=len(self.params_.lambdas))

    def _train_family(self, data: Data, factory: ModelFactory, run: RunDir | None) -> tuple[Any, dict[str, Any]]:
        return train_separate(factory, data, self.train_config_, self.params_.lambdas, seed=self.seed, run=run, resume=self.resume_,
                              callbacks=self.extra_callbacks_, **self._hyper_kwargs())


@register_method("l2_nets")
class L2Nets(FamilyMethod):
    """Ordinary networks, one per lambda, each with the penalty ``lambda ||w||^2 / (2 N_train)``.

    All start from the same initialisation (the run's seed), as the variational nets do.
    Args: ``lambdas``, ``prune``, ``fractions`` (the rest of the family settings are unused).
    """

    knobs = {"log10_range": FamilyMethod.knobs["log10_range"]}  # the posterior's settings do not apply

    def _trainable(self, factory: ModelFactory, data: Data) -> Ensemble:
        """Per epoch: one network per lambda."""
        return Ensemble.from_factory(factory, members=len(self.params_.lambdas))

    def _members(self, family: Ensemble, lambdas: list[float], prune: float) -> Ensemble:
        """The networks themselves (one per lambda), pruned by ``mu^2``."""
        return prune_ensemble(family, prune) if prune else family.clone()

    def _kl(self, family: Ensemble, lambdas: list[float]) -> None:
        return None  # ordinary networks: no posterior

    def _train_family(self, data: Data, factory: ModelFactory, run: RunDir | None) -> tuple[Any, dict[str, Any]]:
        return train_l2(factory, data, self.train_config_, self.params_.lambdas, seed=self.seed, run=run, resume=self.resume_,
                        callbacks=self.extra_callbacks_)
