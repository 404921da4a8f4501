"""The machinery every architecture-search method shares: find architectures, train each
candidate from scratch (a unit of work, cached by its spec), choose the ensemble.

EdgeNES (:mod:`ensemblekit.methods.edgenes`) and its six baselines
(:mod:`ensemblekit.methods.nas_baselines`) differ only in how they *find* their pool of
architectures (one DARTS search, n searches, a hypernetwork over lambda, random draws,
random edits of alpha*) and how many members they keep; everything else is here, once:

1. ``_find`` returns the candidates (genotype, copy index) and the seconds at which each
   became available; the DARTS search and the hypernetwork are cached under the hash of
   their config, seed and data, so methods that need the same search (DARTS single, its
   deep ensemble, its random deviations, EdgeNES, the first of the DARTS ensemble's
   searches) share one computation in a comparison.
2. Every candidate is trained from scratch by :func:`~ensemblekit.nas.candidates.train_candidate`
   with initialisation seed ``derive_seed(seed, "init", copy)`` and ``train`` (the
   method's training config), on the execution backend given to ``fit`` (e.g. Ray) or
   here; a candidate already trained with the same spec is reused.
3. The ensemble of ``members`` is chosen on validation NLL (best of all combinations when
   few, NES ForwardSelect otherwise; Zaidi et al., NeurIPS 2021).

``details()`` reports the pool (architectures, lambdas, validation NLL, seconds), the chosen
members, the cost of finding vs retraining and the accuracy-vs-time curve as candidates
arrive. Formulas and defaults: ``docs/methods.md`` (EdgeNES).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Any, ClassVar, Iterator

from pydantic import Field, ValidationError

from ..data.dataset import Data
from ..ensemble import Ensemble
from ..errors import ConfigError, TrainingError
from ..hashing import code_fingerprint, spec_hash
from ..models.registry import ModelFactory
from ..nas.candidates import candidate_probs, candidate_spec, load_candidate, train_candidate
from ..nas.genotype import Genotype
from ..nas.pool import anytime_curve
from ..nas.search import HyperConfig, HypernetResult, SearchConfig, SearchResult, darts_search, train_hypernet
from ..nas.select import select_ensemble
from ..seeding import derive_seed
from ..training.checkpoint import RunDir
from ..schema import StrictModel
from .base import Method
from ..schema import format_validation_error

__all__ = ["NasMethod", "NasParams", "PoolParams"]


class NasParams(StrictModel):
    """Hyperparameters every search method has: the supernet/search and the retrained networks."""

    search: dict[str, Any] = Field(default_factory=dict)
    channels: int = Field(8, ge=2)
    layers: int = Field(2, ge=1)


class PoolParams(NasParams):
    """A pool of ``pool`` candidates from which ``members`` are chosen."""

    pool: int = Field(6, ge=1)
    members: int = Field(3, ge=1)


class NasMethod(Method):
    """Base class of the architecture-search methods (see the module docstring).

    ``model`` is ignored (a comparison passes its shared model to every method): these
    methods build ``darts`` networks (``channels``, ``layers``) from the genotypes they
    find; any input of shape ``(F,)``, ``(C, L)`` or ``(C, H, W)`` works. ``train``
    configures each candidate's training from scratch. A validation split is required.

    Attributes (after fit): ``ensemble_`` (members of different architectures), ``pool_``
    (per candidate: genotype, key, validation NLL and accuracy, seconds, and what the
    method knows of it, e.g. lambda), ``chosen_`` (pool indices), ``curve_`` (accuracy vs
    seconds as candidates arrive), ``cost_`` (``search``, ``hypernet``, ``cand<i>``,
    ``selection`` seconds).
    """

    Params = NasParams
    uses_model = False
    #: how the EdgeNES tables name the method (``ensemblekit nes``)
    title: ClassVar[str] = "architecture search"
    test_params: dict[str, Any] = {"search": {"steps": 2, "channels": 2, "nodes": 2, "batch_size": 16}, "channels": 2}

    def __init__(self, model: Any = None, **kwargs: Any) -> None:
        super().__init__("darts", **kwargs)

    # ------------------------------------------------------------------ for subclasses
    def _find(self, data: Data, cache: str) -> tuple[list[dict[str, Any]], list[float]]:
        """The candidates, ``[{genotype, copy, info}]``, and the seconds each took to find."""
        raise NotImplementedError

    def _size(self, pool: int) -> int:
        """How many members to keep from a pool of ``pool`` candidates."""
        return min(int(getattr(self.params_, "members", 1)), pool)

    # ------------------------------------------------------------------ shared stages
    def search_config(self) -> SearchConfig:
        try:
            return SearchConfig(**self.params_.search)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, prefix=f"{self.name}.search", root=SearchConfig)) from None

    def _search(self, data: Data, cache: str, seed: int, stage: str = "search") -> tuple[SearchResult, Any]:
        """A first-order DARTS search (cached by config, seed and data); its cost is recorded as ``stage``."""
        cfg = self.search_config()
        folder = os.path.join(cache, "search-" + spec_hash({"search": cfg.model_dump(), "seed": int(seed), "data": data.digest(), "code": code_fingerprint()}))
        star, net = darts_search(data, cfg, seed, folder)
        self._record_stage(stage, {"seconds": star.seconds, "flops": star.flops})
        return star, net

    def _hypernet(self, net: Any, data: Data, star: SearchResult, hyper: HyperConfig, cache: str) -> HypernetResult:
        cfg = self.search_config()
        key = spec_hash({"search": cfg.model_dump(), "hyper": hyper.model_dump(), "seed": int(self.seed), "data": data.digest(), "code": code_fingerprint()})
        result = train_hypernet(net, data, star, cfg, hyper, self.seed, os.path.join(cache, "hypernet-" + key))
        self._record_stage("hypernet", {"seconds": result.seconds, "flops": result.flops}, [{"stage": "hypernet", **h} for h in result.history])
        return result

    @staticmethod
    def candidate(genotype: Genotype, copy: int = 0, **info: Any) -> dict[str, Any]:
        return {"genotype": genotype, "copy": int(copy), "info": info}

    def _check(self, data: Data, factory: ModelFactory) -> None:
        if data.val is None:
            raise ConfigError(f"{self.name}: needs a validation split (ensemble selection is on validation NLL)")
        if not data.train.in_memory:
            raise ConfigError(f"{self.name}: the architecture search needs an in-memory training split")
        self.search_config()

    # ------------------------------------------------------------------ fit
    @contextlib.contextmanager
    def _cache(self) -> Iterator[str]:
        if self.cache_dir_ is not None:
            os.makedirs(self.cache_dir_, exist_ok=True)
            yield self.cache_dir_
        else:  # a fit without a run directory keeps nothing on disk
            with tempfile.TemporaryDirectory(prefix="ensemblekit-nas-") as folder:
                yield folder

    def _fit(self, data: Data, factory: ModelFactory, run: RunDir | None) -> None:
        with self._cache() as cache:
            cands, find_parts = self._find(data, cache)
            train = self.train_config_.model_dump()
            specs = [candidate_spec(c["genotype"], seed=derive_seed(self.seed, "init", c["copy"]), channels=self.params_.channels,
                                    layers=self.params_.layers, train=train, data=data) for c in cands]
            root = os.path.join(cache, "candidates")
            records = self._train_candidates(specs, data, root)
            keys = [s["key"] for s in specs]
            for i, rec in enumerate(records):
                self._record_stage(f"cand{i}", {"seconds": rec["seconds"], "flops": rec.get("flops")},
                                   [{**h, "stage": f"cand{i}"} for h in rec.get("history", [])])
            val, test = candidate_probs(root, keys)
            size = self._size(len(keys))
            self.chosen_ = self._measured("selection", lambda: select_ensemble(val, data.val.y, size) if len(keys) > size else list(range(len(keys))))
            self.pool_ = [{**c["info"], "genotype": c["genotype"].text(), "key": k, "val_nll": r["val_nll"], "val_acc": r["val_acc"],
                           "seconds": r["seconds"]} for c, k, r in zip(cands, keys, records)]
            self.find_parts_ = list(find_parts)
            self.curve_ = anytime_curve(val, test, data.val.y, data.test.y, find_parts, [r["seconds"] for r in records], size)
            members = [load_candidate(root, keys[i]) for i in self.chosen_]
        for i, m in zip(self.chosen_, members):
            m.members_info = [{**m.members_info[0], "candidate": i, **self.pool_[i]}]
        self.ensemble_ = Ensemble.cat(members)

    def _train_candidates(self, specs: list[dict[str, Any]], data: Data, root: str) -> list[dict[str, Any]]:
        """Train every distinct candidate once (on the backend when one was given); records in ``specs`` order."""
        unique = list({s["key"]: s for s in specs}.values())
        if self.backend_ is None:
            done = {s["key"]: train_candidate(s, data=data, root=root, callbacks=self.extra_callbacks_) for s in unique}
        else:
            outcomes = self.backend_.map(train_candidate, unique, context={"data": data, "root": root})
            failed = [o for o in outcomes if not o.ok]
            if failed:
                raise TrainingError(f"{self.name}: {len(failed)} candidate(s) failed, first: {failed[0].key}: {failed[0].error}")
            done = {o.key: o.value for o in outcomes}
        return [done[s["key"]] for s in specs]

    # ------------------------------------------------------------------ results
    def details(self, data: Data) -> dict[str, Any]:
        """Pool, chosen members, finding vs retraining seconds and the anytime curve."""
        self._check_fitted()
        retrain = float(sum(self.cost_[f"cand{i}"] for i in range(len(self.pool_))))
        return {"pool": self.pool_, "chosen": [self.pool_[i]["key"] for i in self.chosen_], "chosen_index": list(self.chosen_),
                "find_s": float(sum(self.find_parts_)), "retrain_s": retrain, "find_parts": self.find_parts_, "curve": self.curve_}

