"""The baselines of EdgeNES, each a registered method on the shared search machinery.

- ``darts``: DARTS's architecture alpha*, one network (Liu, Simonyan & Yang, ICLR 2019);
- ``random_arch``: one uniformly random architecture;
- ``darts_ensemble``: n independent DARTS searches, one network each;
- ``deepens_darts``: alpha* trained from n initialisations (a deep ensemble of alpha*);
- ``nes_rs``: NES-RS, ``pool`` random architectures and forward selection of n
  (Zaidi et al., "Neural Ensemble Search for Uncertainty Estimation and Dataset Shift", NeurIPS 2021);
- ``nes_deviation``: ``pool`` copies of alpha* with ``k`` random edges changed, n chosen.

Budget: the retrained networks count (k single models = k trained candidates); the
architecture-finding cost is reported apart (``details.find_s``). The single-network
baselines exist at 1B only. See ``docs/methods.md``.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from ..data.dataset import Data
from ..errors import ConfigError
from ..nas.genotype import common_edges
from ..nas.pool import deviation_pool, random_pool
from ..seeding import derive_seed
from ..training.config import TrainConfig
from .base import register_method
from .edgenes import pool_budget
from .nas import NasMethod, NasParams, PoolParams

__all__ = ["DartsSingle", "RandomArchitecture", "DartsEnsemble", "DeepEnsDarts", "NesRS", "NesDeviation"]


class _Single(NasMethod):
    """One network: exists at a budget of one model only."""

    @classmethod
    def at_budget(cls, budget: int, train: TrainConfig, params: dict[str, Any] | None = None) -> dict[str, Any] | None:
        return {} if budget == 1 else None

    def _size(self, pool: int) -> int:
        return 1


class _Members(NasParams):
    members: int = Field(3, ge=1)


class _MembersMethod(NasMethod):
    """n networks, all kept: k single-model budgets give n = k."""

    Params = _Members
    test_params = {**NasMethod.test_params, "members": 2}

    @classmethod
    def at_budget(cls, budget: int, train: TrainConfig, params: dict[str, Any] | None = None) -> dict[str, Any] | None:
        return {"members": budget} if budget >= 1 else None


class _PoolMethod(NasMethod):
    Params = PoolParams
    test_params = {**NasMethod.test_params, "pool": 2, "members": 2}

    @classmethod
    def at_budget(cls, budget: int, train: TrainConfig, params: dict[str, Any] | None = None) -> dict[str, Any] | None:
        return pool_budget(budget, params)

    def validate(self) -> None:
        super().validate()
        if self.params_.members > self.params_.pool:
            raise ConfigError(f"{self.name}: members ({self.params_.members}) must be <= pool ({self.params_.pool})")


@register_method("darts")
class DartsSingle(_Single):
    """DARTS (first order): the searched cell alpha*, trained from scratch as one network.

    Args: ``search`` (:class:`~ensemblekit.nas.search.SearchConfig` fields), ``channels``, ``layers``.
    """

    title = "DARTS (single)"

    def _find(self, data: Data, cache: str) -> tuple[list[dict[str, Any]], list[float]]:
        star, _ = self._search(data, cache, self.seed)
        return [self.candidate(star.genotype, 0, common=star.genotype.num_kept)], [star.seconds]


@register_method("random_arch")
class RandomArchitecture(_Single):
    """One uniformly random architecture of the DARTS space (NES-RS's first draw), trained from scratch."""

    title = "random architecture"

    def _find(self, data: Data, cache: str) -> tuple[list[dict[str, Any]], list[float]]:
        s = self.search_config()
        return [self.candidate(random_pool(self.seed, 1, s.nodes, s.keep)[0], 0)], [0.0]


@register_method("darts_ensemble")
class DartsEnsemble(_MembersMethod):
    """n independent DARTS searches (seeds: the run's, then ``derive_seed(seed, "darts", i)``), one network each.

    Args: ``members`` (n, default 3), ``search``, ``channels``, ``layers``.
    """

    title = "DARTS ensemble (n searches)"

    def _find(self, data: Data, cache: str) -> tuple[list[dict[str, Any]], list[float]]:
        cands, parts = [], []
        for i in range(self.params_.members):
            seed = self.seed if i == 0 else derive_seed(self.seed, "darts", i)
            star, _ = self._search(data, cache, seed, stage="search" if i == 0 else f"search{i}")
            cands.append(self.candidate(star.genotype, 0, search=i))
            parts.append(star.seconds)
        return cands, parts


@register_method("deepens_darts")
class DeepEnsDarts(_MembersMethod):
    """A deep ensemble of alpha*: the one searched architecture trained from n initialisations.

    Args: ``members`` (n, default 3), ``search``, ``channels``, ``layers``.
    """

    title = "DeepEns of alpha* (n seeds)"

    def _find(self, data: Data, cache: str) -> tuple[list[dict[str, Any]], list[float]]:
        star, _ = self._search(data, cache, self.seed)
        n = self.params_.members
        return [self.candidate(star.genotype, c, common=star.genotype.num_kept) for c in range(n)], [star.seconds] + [0.0] * (n - 1)


@register_method("nes_rs")
class NesRS(_PoolMethod):
    """NES-RS: ``pool`` uniformly random architectures trained from scratch, n chosen by forward selection.

    Args: ``pool`` (default 6), ``members`` (n, default 3), ``search`` (its ``nodes`` and
    ``keep`` shape the space), ``channels``, ``layers``.
    """

    title = "NES-RS (random + ForwardSelect)"

    def _find(self, data: Data, cache: str) -> tuple[list[dict[str, Any]], list[float]]:
        s, p = self.search_config(), self.params_
        return [self.candidate(g, 0) for g in random_pool(self.seed, p.pool, s.nodes, s.keep)], [0.0] * p.pool


class _DeviationParams(PoolParams):
    k: int = Field(4, ge=0)


@register_method("nes_deviation")
class NesDeviation(_PoolMethod):
    """``pool`` random deviations of alpha* (``k`` of its kept edges changed each), n chosen.

    Args: ``k`` (edges changed, default 4), ``pool``, ``members``, ``search``, ``channels``, ``layers``.
    """

    Params = _DeviationParams
    title = "random deviation"

    def _find(self, data: Data, cache: str) -> tuple[list[dict[str, Any]], list[float]]:
        star, _ = self._search(data, cache, self.seed)
        p = self.params_
        pool = deviation_pool(star.genotype, self.seed, p.pool, p.k)
        return [self.candidate(g, 0, common=common_edges(g, star.genotype)) for g in pool], [star.seconds] + [0.0] * (p.pool - 1)
