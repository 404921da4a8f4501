"""Discount rules of margin boosting (docs/methods.md, boosting): the next member's per-object discount
from the training margins of the members before it.

A rule is any callable ``rule(history) -> g`` where ``history`` is the list of margin
vectors ``[m_1, ..., m_t]`` (each ``(N,)``, member t's margins on the training set, in
order) and ``g`` is the ``(N,)`` discount of member ``t + 1``. The first member gets the
method's ``initial_discount`` (``g0``) because there is no history yet.

Paper: Shokorov, "Boosting of deep neural-network ensembles" (MIPT, 2023), with the
formulas as the author's thesis and code state them (docs/methods.md, boosting).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from ..errors import ConfigError

__all__ = ["DiscountRule", "constant", "save_mean", "zero_mean", "last", "cumulative_mean", "DISCOUNTS", "get_discount"]

DiscountRule = Callable[[Sequence[torch.Tensor]], torch.Tensor]


def _check(history: Sequence[torch.Tensor]) -> torch.Tensor:
    if len(history) == 0:
        raise ConfigError("a discount rule needs the margins of at least one member (history is empty)")
    return history[-1].float()


def constant(c: float = 0.0) -> DiscountRule:
    """``g_i = c`` for every object (thesis best single model: c = 34, CIFAR-10 ResNet9).

    Example:
        >>> constant(2.0)([torch.tensor([1.0, 3.0])]).tolist()
        [2.0, 2.0]
    """

    def rule(history: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.full_like(_check(history), float(c))

    rule.__name__ = f"constant({c:g})"
    return rule


def save_mean(history: Sequence[torch.Tensor]) -> torch.Tensor:
    """``g_i = 2 mean(m_T) - m_T,i`` (the default): the mean discount equals the mean margin of
    the last member and objects with small margins get large discounts.

    Example:
        >>> save_mean([torch.tensor([1.0, 2.0, 6.0])]).tolist()
        [5.0, 4.0, 0.0]
    """
    m = _check(history)
    return 2 * m.mean() - m


def zero_mean(history: Sequence[torch.Tensor]) -> torch.Tensor:
    """``g_i = mean(m_T) - m_T,i`` (zero mean discount).

    Example:
        >>> zero_mean([torch.tensor([1.0, 2.0, 6.0])]).tolist()
        [2.0, 1.0, -3.0]
    """
    m = _check(history)
    return m.mean() - m


def last(c: float = 0.0) -> DiscountRule:
    """``g_i = c + mean(m_T) - m_T,i``.

    Example:
        >>> last(1.0)([torch.tensor([1.0, 2.0, 6.0])]).tolist()
        [3.0, 2.0, -2.0]
    """

    def rule(history: Sequence[torch.Tensor]) -> torch.Tensor:
        m = _check(history)
        return c + m.mean() - m

    rule.__name__ = f"last({c:g})"
    return rule


def cumulative_mean(c: float = 0.0) -> DiscountRule:
    """``g_i = c + (1/T) sum_t (mean(m_t) - m_t,i)`` over all members so far.

    Example:
        >>> cumulative_mean(0.0)([torch.tensor([1.0, 2.0, 6.0]), torch.tensor([3.0, 3.0, 0.0])]).tolist()
        [0.5, 0.0, -0.5]
    """

    def rule(history: Sequence[torch.Tensor]) -> torch.Tensor:
        _check(history)
        dev = torch.stack([m.float().mean() - m.float() for m in history])
        return c + dev.mean(0)

    rule.__name__ = f"cumulative_mean({c:g})"
    return rule


# name -> builder taking the constant c (rules without c ignore it)
DISCOUNTS: dict[str, Callable[[float], DiscountRule]] = {
    "constant": constant,
    "save_mean": lambda c: save_mean,
    "zero_mean": lambda c: zero_mean,
    "last": last,
    "cumulative_mean": cumulative_mean,
}


def get_discount(rule: str | DiscountRule, c: float = 0.0) -> DiscountRule:
    """A rule by name (``constant``, ``save_mean``, ``zero_mean``, ``last``, ``cumulative_mean``;
    ``c`` is their constant) or a user callable returned as is.

    Raises:
        ConfigError: an unknown name.
    """
    if callable(rule):
        return rule
    if rule not in DISCOUNTS:
        raise ConfigError(f"boosting.discount: unknown rule {rule!r}; valid: {', '.join(DISCOUNTS)} or a callable")
    return DISCOUNTS[rule](float(c))
