"""Margin boosting of deep networks with a discounted loss and a frozen last layer (docs/methods.md, boosting).

Members train one after another, each from a fresh initialisation, on the discounted
cross-entropy ``L(f, g)`` (the true-class logit lowered by ``g_i``); after each member its
training margins ``m = f_y - max_{j != y} f_j`` (eval mode, no augmentation) go into the
history and the discount rule gives the next member's ``g``. Predictions average member
probabilities. Paper: Shokorov, "Boosting of deep neural-network ensembles" (MIPT, 2023), with the formulas as the author's thesis and code state them; docs/methods.md.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Union

import torch
from pydantic import Field

from ..data.dataset import Data
from ..ensemble import Ensemble
from ..errors import ConfigError, DataError
from ..metrics.margins import margin_summary, member_margins
from ..models.frozen_head import check_discount, frozen_weight
from ..models.registry import ModelFactory
from ..seeding import derive_seed
from ..training.checkpoint import RunDir
from ..schema import StrictModel
from ..training.config import TrainConfig
from ..training.losses import discounted_loss_fn
from .base import Method, register_method
from .discounts import get_discount

__all__ = ["Boosting"]

@register_method("boosting")
class Boosting(Method):
    """T members trained sequentially, member t+1 on ``L(f, g)`` with ``g = rule(m_1..m_t)``.

    Use a model with a frozen head (``model={"name": "cnn1d", "frozen_head": 5}``): with a
    trainable last layer growing ``||W||`` cancels any discount (Lemma 1), so ``fit`` warns
    when the model's last Linear trains. Each member's discount is checked against
    Theorem 1's bound ``(2/K)||W||_1`` of its own frozen head (a warning when exceeded).

    Choices where the sources are open (docs/methods.md): the first member uses ``initial_discount``
    (``g0``, default 0: plain cross-entropy), also for the ``constant`` rule (set
    ``initial_discount = discount_c`` to discount every member); each member has its own
    initialisation seed and data-order seed; margins are those of the single member (not of
    the ensemble so far), as in the author's code; a user rule is any callable
    ``rule(list of (N,) margin tensors) -> (N,) discounts``. Budget: T members of E
    epochs cost T*E epochs, like an independent ensemble of T (plus one evaluation pass
    over the training set per member for the margins, recorded in ``cost_["margins"]``).
    Members train one at a time, so on a CPU boosting takes longer in wall-clock than an
    independent ensemble, whose members train together in one vectorised pass.

    Args:
        members: T (>= 1; default 5).
        discount: ``save_mean`` (default), ``zero_mean``, ``constant``, ``last``,
            ``cumulative_mean`` or a callable.
        discount_c: the constant c of ``constant``, ``last`` and ``cumulative_mean`` (default 0).
        initial_discount: g0 of the first member (default 0).

    Example:
        >>> import ensemblekit as ek
        >>> data = ek.load_dataset("mnist1d")
        >>> b = ek.create_method("boosting", model={"name": "cnn1d", "frozen_head": 5}, members=5,
        ...                      epochs=20, optimizer={"name": "adam", "lr": 0.003}).fit(data)
        >>> [round(r["mean_discount"], 2) for r in b.rounds_][:1]
        [0.0]
    """

    knobs = {"discount": {"type": "categorical", "choices": ["constant", "save_mean", "zero_mean", "last", "cumulative_mean"]}}
    class Params(StrictModel):
        members: int = Field(5, ge=1)
        discount: Union[str, Callable[..., Any]] = "save_mean"
        discount_c: float = 0.0
        initial_discount: float = 0.0

    @classmethod
    def at_budget(cls, budget: int, train: TrainConfig, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"members": budget}

    def validate(self) -> None:
        super().validate()
        self.rule_ = get_discount(self.params_.discount, self.params_.discount_c)

    def _check(self, data: Data, factory: ModelFactory) -> None:
        if not data.train.in_memory:
            raise DataError("boosting needs an in-memory training split: the discounted loss looks discounts up by example index")

    def _trainable(self, factory: ModelFactory, data: Data) -> Ensemble:
        return Ensemble.from_factory(factory, members=self.params_.members)  # the members train one after another: the same FLOPs

    def _fit(self, data: Data, factory: ModelFactory, run: RunDir | None) -> None:
        p = self.params_
        if frozen_weight(factory()) is None:
            warnings.warn("boosting: the model's last Linear layer trains; growing ||W|| can cancel any discount "
                          "(Lemma 1); use model={..., frozen_head: s}", stacklevel=3)
        if not data.train.in_memory:
            raise DataError("boosting needs an in-memory training split: the discounted loss looks discounts up by example index")
        n = len(data.train.y)
        g = torch.full((n,), float(p.initial_discount))
        history: list[torch.Tensor] = []
        members: list[Ensemble] = []
        self.rounds_: list[dict[str, Any]] = []
        for t, seed in enumerate(self.member_seeds(p.members)):
            member = Ensemble.from_factory(factory, seeds=[seed])
            check_discount(g, frozen_weight(member.member(0)), where=f"boosting member {t}")
            member = self._train_member(member, data, run, t, g)
            m = self._measured("margins", lambda: member_margins(member, data.train)[0])
            history.append(m)
            members.append(member)
            self.rounds_.append({"member": t, "mean_discount": float(g.mean()), "discount_std": float(g.std()) if n > 1 else 0.0,
                                 "margins": margin_summary(m)})
            if t + 1 < p.members:
                g = self._next_discount(history, n)
        self.margins_ = torch.stack(history)  # (T, N): training margins of each member
        self.ensemble_ = Ensemble.cat(members)

    def _next_discount(self, history: list[torch.Tensor], n: int) -> torch.Tensor:
        g = torch.as_tensor(self.rule_(list(history)), dtype=torch.float32).detach().cpu()
        if g.shape != (n,) or not torch.isfinite(g).all():
            raise ConfigError(f"boosting.discount: the rule must return {n} finite discounts, got shape {tuple(g.shape)}")
        return g

    def _train_member(self, member: Ensemble, data: Data, run: RunDir | None, t: int, g: torch.Tensor) -> Ensemble:
        """One engine stage per member (own checkpoints, so resume works between and within members)."""
        return self._train_stage(member, data, run, f"member{t}", seed=derive_seed(self.seed, "boosting", t),
                                 tag={"member": t}, loss_fn=discounted_loss_fn(g))

    def report(self, run: RunDir, data: Data) -> None:
        """Margin histograms per round, mean discount per round, test error vs number of members."""
        from ..report.boosting_plots import boosting_report

        boosting_report(self, run, data)
