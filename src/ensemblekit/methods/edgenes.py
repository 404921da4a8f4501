"""EdgeNES: differentiable ensemble search with diversity control.

One first-order DARTS search gives the cell alpha*; a hypernetwork maps lambda (the number
of kept edges an architecture shares with alpha*, in [0, Lambda]) to architecture logits;
architectures sampled across lambda form the pool, each is trained from scratch and the
ensemble is chosen from the pool on validation NLL.

Paper: Babkin & Bakhteev, "Differentiable search of neural-network ensembles with
diversity control" (MIPT, 2024), on DARTS (Liu, Simonyan & Yang, ICLR 2019) and NES
(Zaidi et al., NeurIPS 2021). Formulas, defaults, resolved ambiguities: ``docs/methods.md``.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, ValidationError

from ..data.dataset import Data
from ..errors import ConfigError
from ..nas.pool import sample_pool, spearman
from ..nas.search import HyperConfig
from ..seeding import derive_seed
from ..training.config import TrainConfig
from .base import register_method
from ..schema import format_validation_error
from .nas import NasMethod, PoolParams

__all__ = ["EdgeNES", "EdgeNESParams"]


class EdgeNESParams(PoolParams):
    hyper: dict[str, Any] = Field(default_factory=dict)
    lambdas: str = Field("grid", pattern="^(grid|uniform)$")


@register_method("edgenes")
class EdgeNES(NasMethod):
    """A pool of ``pool`` architectures sampled from a hypernetwork over lambda; ``members`` chosen.

    Steps: DARTS search (``search``) -> alpha*; the hypernetwork (``hyper``: K = 5 pivot
    logit sets interpolated over lambda, trained on ``L_val + c (lambda - s)^2`` with s the
    soft count of edges shared with alpha*); ``pool`` architectures at lambdas on a grid over
    [0, Lambda] (``lambdas: grid``, default) or drawn uniformly; each trained from scratch;
    the ensemble of ``members`` chosen on validation NLL.

    Args:
        search: :class:`~ensemblekit.nas.search.SearchConfig` fields (supernet, DARTS steps).
        hyper: :class:`~ensemblekit.nas.search.HyperConfig` fields (pivots, steps, annealing).
        channels: channels of the retrained networks (even, default 8). layers: their cells (default 2).
        pool: architectures sampled and trained (>= 1; default 6).
        members: n, the ensemble size (1 <= n <= pool; default 3).
        lambdas: ``grid`` (evenly spaced on [0, Lambda]) or ``uniform`` draws.

    Attributes (after fit): those of :class:`~ensemblekit.methods.nas.NasMethod`, and
    ``genotype_`` (alpha*), ``spearman_`` (lambda vs discrete common edges over a grid of
    4 (Lambda + 1) lambdas: the diversity control).

    Example:
        >>> m = ek.create_method("edgenes", search={"steps": 300}, hyper={"steps": 300}, pool=6, members=3, epochs=10)
        >>> m.fit(ek.load_dataset("mnist1d")).genotype_.text()
    """

    Params = EdgeNESParams
    title = "EdgeNES"
    test_params = {**NasMethod.test_params, "hyper": {"steps": 2}, "pool": 2, "members": 2}

    @classmethod
    def at_budget(cls, budget: int, train: TrainConfig, params: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """A budget of k single models retrains a pool of k architectures and keeps
        ``min(members, k)``. The architecture-finding cost (one DARTS search and the
        hypernetwork) is not in that budget: the row reports it (``details.find_s``)."""
        return pool_budget(budget, params)

    def validate(self) -> None:
        super().validate()
        if self.params_.members > self.params_.pool:
            raise ConfigError(f"{self.name}: members ({self.params_.members}) must be <= pool ({self.params_.pool})")

    def _check(self, data: Data, factory: Any) -> None:
        super()._check(data, factory)
        self.hyper_config()

    def hyper_config(self) -> HyperConfig:
        try:
            return HyperConfig(**self.params_.hyper)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, prefix=f"{self.name}.hyper", root=HyperConfig)) from None

    def _find(self, data: Data, cache: str) -> tuple[list[dict[str, Any]], list[float]]:
        p, search = self.params_, self.search_config()
        hyper_cfg = self.hyper_config()
        star, net = self._search(data, cache, self.seed)
        result = self._hypernet(net, data, star, hyper_cfg, cache)
        self.genotype_ = star.genotype
        rows = sample_pool(result.hyper, star.genotype, p.pool, p.lambdas, derive_seed(self.seed, "pool"), search.keep)
        grid = sample_pool(result.hyper, star.genotype, 4 * (int(result.hyper.lam_max) + 1), "grid", derive_seed(self.seed, "grid"), search.keep)
        self.grid_ = [{"lambda": r["lambda"], "common": r["common"]} for r in grid]
        self.spearman_ = spearman([r["lambda"] for r in grid], [r["common"] for r in grid])
        found = star.seconds + result.seconds
        cands = [self.candidate(r["genotype"], 0, **{"lambda": r["lambda"], "common": r["common"]}) for r in rows]
        return cands, [found] + [0.0] * (len(cands) - 1)

    def details(self, data: Data) -> dict[str, Any]:
        return {**super().details(data), "alpha_star": self.genotype_.to_json(), "alpha_star_text": self.genotype_.text(),
                "grid": self.grid_, "spearman": self.spearman_,
                "hyper_history": [h for h in self.history_ if h.get("stage") == "hypernet"]}


def pool_budget(budget: int, params: dict[str, Any] | None) -> dict[str, Any] | None:
    """k single-model budgets retrain a pool of k architectures and keep ``min(members, k)``."""
    if budget < 1:
        return None
    members = int((params or {}).get("members", 3))
    return {"pool": budget, "members": min(members, budget)}
