"""MIMO as a method: M inputs and M heads in one network, trained on independent examples per head.

Havasi et al., ICLR 2021 (:mod:`ensemblekit.efficient.mimo`); docs/methods.md (mimo).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from ..efficient.mimo import to_mimo
from ..schema import StrictModel
from ..training.config import TrainConfig
from .base import register_method
from .one_network import SharedNetworkMethod

__all__ = ["MIMO"]


@register_method("mimo")
class MIMO(SharedNetworkMethod):
    """One network with an M-times-wider input layer and M heads.

    In training every head gets its own example (``train.data_order: shared`` is taken as
    ``per_member``, each head its own shuffling; ``bootstrap`` is kept), an example goes to
    every head with probability ``input_repetition``, and ``batch_repetition`` r repeats each
    mini-batch with the heads re-paired. At test time every head sees the same input.

    Budget: kB = one run of k·E epochs (an epoch costs about one model's, times r).

    Args:
        members: M (>= 1; default 3). input_repetition: ρ in [0, 1) (default 0.6: on MNIST-1D,
            3 heads, 15 epochs of a 32-channel cnn1d err 29.5% with ρ = 0 and 8.8% with 0.6,
            seed 0). batch_repetition: r >= 1 (default 1).

    Paper: Havasi et al., "Training independent subnetworks for robust prediction", ICLR 2021;
    docs/methods.md (mimo).
    """

    knobs = {"input_repetition": {"type": "float", "low": 0.0, "high": 0.9}, "batch_repetition": {"type": "int", "low": 1, "high": 4}}
    class Params(StrictModel):
        members: int = Field(3, ge=1)
        input_repetition: float = Field(0.6, ge=0, lt=1)
        batch_repetition: int = Field(1, ge=1)

    test_params = {"members": 2, "input_repetition": 0.3, "batch_repetition": 2}

    transform = "mimo"
    _transform = staticmethod(to_mimo)

    def _options(self) -> dict[str, Any]:
        p = self.params_
        return {"members": p.members, "input_repetition": p.input_repetition, "batch_repetition": p.batch_repetition}

    def _per_member(self) -> bool:
        return True  # every head its own example

    def _stage_config(self) -> TrainConfig:
        cfg = self.train_config_  # the engine reads each head's labels from model.targets
        return cfg.model_copy(update={"data_order": "per_member"}) if cfg.data_order == "shared" else cfg
