"""Masksembles as a method: fixed per-member channel masks in one shared network.

Durasov et al., CVPR 2021 (:mod:`ensemblekit.efficient.masksembles`); docs/methods.md (masksembles).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from ..efficient.masksembles import to_masksembles
from ..seeding import derive_seed
from ..schema import StrictModel
from .base import register_method
from .one_network import SharedNetworkMethod

__all__ = ["Masksembles"]


@register_method("masksembles")
class Masksembles(SharedNetworkMethod):
    """M members sharing all weights, each seeing the features through its own fixed binary mask.

    The masks sit before the head (``where: head``) or after every hidden Linear/Conv as well
    (``where: all``); ``scale`` (>= 1) sets their overlap (1: identical, larger: less).
    The batch is repeated once per member.

    Budget: kB = one run of k·E epochs (each epoch costs about M single-model epochs).

    Args:
        members: M (>= 1; default 4). scale: >= 1 (default 2). where: ``head`` | ``all``.

    Paper: Durasov, Bagautdinov, Baque & Fua, "Masksembles for Uncertainty Estimation", CVPR
    2021; docs/methods.md (masksembles).
    """

    knobs = {"scale": {"type": "float", "low": 1.2, "high": 4.0}}
    class Params(StrictModel):
        members: int = Field(4, ge=1)
        scale: float = Field(2.0, ge=1)
        where: Literal["head", "all"] = "head"

    test_params = {"members": 2, "scale": 1.5}

    transform = "masksembles"
    _transform = staticmethod(to_masksembles)

    def _options(self) -> dict[str, Any]:
        p = self.params_
        return {"members": p.members, "scale": p.scale, "where": p.where, "seed": derive_seed(self.seed, "masks")}
