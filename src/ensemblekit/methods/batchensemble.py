"""BatchEnsemble as a method: one network with rank-1 per-member factors, trained in one run.

Wen, Tran & Ba, ICLR 2020 (:mod:`ensemblekit.efficient.batchensemble`); docs/methods.md (batch_ensemble).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from ..efficient.batchensemble import to_batch_ensemble
from ..schema import StrictModel
from .base import register_method
from .one_network import SharedNetworkMethod, single_run_budget

__all__ = ["BatchEnsemble", "single_run_budget"]


@register_method("batch_ensemble")
class BatchEnsemble(SharedNetworkMethod):
    """M members sharing every weight ``W``, each with its own rank-1 factors ``r_m, s_m`` and biases.

    Every Linear/Conv1d/Conv2d of the model becomes ``y = ((x ∘ r_m) W) ∘ s_m + b_m``; the
    batch is repeated once per member, so one step trains all M members and one forward
    pass predicts with all of them. Parameters: one model plus ``M (in + 2 out)`` per layer.

    Budget: kB = one run of k·E epochs (each epoch costs about M single-model epochs: the
    Training FLOPs column measures it; ``budget_unit: flops`` gives it fewer epochs).

    Args:
        members: M (>= 1; default 4).
        init: factor initialisation, ``random_sign`` (±1, default) or ``normal`` (N(1, init_std²)).
        init_std: the normal's std (default 0.5).
        decay_factors: weight decay on the factors too (default True; False: only the shared weights decay).

    Paper: Wen, Tran & Ba, "BatchEnsemble: An Alternative Approach to Efficient Ensemble and
    Lifelong Learning", ICLR 2020; docs/methods.md (batch_ensemble).
    """

    knobs = {"init_std": {"type": "float", "low": 0.1, "high": 1.0, "log": True}, "decay_factors": {"type": "categorical", "choices": [True, False]}}
    class Params(StrictModel):
        members: int = Field(4, ge=1)
        init: Literal["random_sign", "normal"] = "random_sign"
        init_std: float = Field(0.5, gt=0)
        decay_factors: bool = True

    test_params = {"members": 3}

    transform = "batch_ensemble"
    _transform = staticmethod(to_batch_ensemble)

    def _options(self) -> dict[str, Any]:
        p = self.params_
        return {"members": p.members, "init": p.init, "init_std": p.init_std, "decay_factors": p.decay_factors}
