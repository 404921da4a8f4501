"""EdgeNES: differentiable ensemble search with diversity control (METHODS.md §6, seed 001)."""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from ..data.dataset import Data
from ..ensemble import Ensemble
from ..errors import ConfigError
from ..models.registry import ModelFactory, model_factory
from ..training.checkpoint import RunDir
from ..training.config import StrictModel, TrainConfig
from .base import Method, register_method

__all__ = ["EdgeNES"]


@register_method("edgenes")
class EdgeNES(Method):
    """One first-order DARTS search gives alpha*; a hypernetwork maps lambda (the number of
    kept edges shared with alpha*) to architecture logits; architectures sampled at a lambda
    grid are trained from scratch and an ensemble of ``members`` is chosen from that pool
    on validation NLL (best of all combinations when few, else NES ForwardSelect).

    ``model`` is not used (it defaults to ``darts`` and is only checked against the data):
    EdgeNES searches its own architectures and builds ``darts`` networks (``channels``,
    ``layers``) from them; any input of shape ``(F,)``, ``(C, L)``
    or ``(C, H, W)`` works. ``train`` configures each candidate's retraining.

    Args:
        search: :class:`~ensemblekit.nas.search.SearchConfig` fields (supernet, DARTS steps).
        hyper: :class:`~ensemblekit.nas.search.HyperConfig` fields (pivots K=5, steps, annealing).
        channels: channels of the retrained networks (even, default 8). layers: their cells (default 2).
        pool: architectures sampled and trained (>= 1; default 6).
        members: n, the ensemble size (1 <= n <= pool; default 3).
        lambdas: ``grid`` (evenly spaced on [0, Lambda]) or ``uniform`` draws.

    Attributes (after fit): ``ensemble_`` (members of different architectures), ``genotype_``
    (alpha*), ``pool_`` (per candidate: lambda, common edges with alpha*, genotype, val NLL),
    ``chosen_`` (pool indices), ``cost_`` with ``search``, ``hypernet``, ``cand<i>`` and
    ``selection`` seconds.

    Example:
        >>> m = ek.create_method("edgenes", search={"steps": 300}, hyper={"steps": 300}, pool=6, members=3, epochs=10)
        >>> m.fit(ek.load_dataset("mnist1d")).genotype_.text()
    """

    class Params(StrictModel):
        search: dict[str, Any] = Field(default_factory=dict)
        hyper: dict[str, Any] = Field(default_factory=dict)
        channels: int = Field(8, ge=2)
        layers: int = Field(2, ge=1)
        pool: int = Field(6, ge=1)
        members: int = Field(3, ge=1)
        lambdas: str = Field("grid", pattern="^(grid|uniform)$")

    test_params = {"search": {"steps": 2, "channels": 2, "nodes": 2, "batch_size": 16}, "hyper": {"steps": 2}, "channels": 2, "pool": 2, "members": 2}

    def __init__(self, model: Any = "darts", **kwargs: Any) -> None:
        super().__init__(model, **kwargs)

    @classmethod
    def at_budget(cls, budget: int, train: TrainConfig, params: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """A budget of k single models retrains a pool of k architectures and keeps
        ``min(members, k)``. The architecture-finding cost (one DARTS search and the
        hypernetwork, ``search.steps + hyper.steps`` supernet steps) is *not* in that
        budget: it is reported separately in ``cost_``. None for k < 1."""
        if budget < 1:
            return None
        members = int((params or {}).get("members", 3))
        return {"pool": budget, "members": min(members, budget)}

    def _fit(self, data: Data, factory: ModelFactory, run: RunDir | None) -> None:
        import time

        from ..experiments.nes import sample_pool
        from ..nas.search import HyperConfig, SearchConfig, darts_search, train_hypernet
        from ..nas.select import ensemble_nll, select_ensemble
        from ..methods.base import format_validation_error
        from pydantic import ValidationError

        p = self.params_
        if p.members > p.pool:
            raise ConfigError(f"edgenes: members ({p.members}) must be <= pool ({p.pool})")
        if data.val is None:
            raise ConfigError("edgenes: needs a validation split (ensemble selection is on validation NLL)")
        try:
            search, hyper_cfg = SearchConfig(**p.search), HyperConfig(**p.hyper)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, prefix="edgenes")) from None
        folder = run.file("nas") if run is not None else None
        star, net = darts_search(data, search, self.seed, folder)
        hyper, hyper_s, hist = train_hypernet(net, data, star, search, hyper_cfg, self.seed, folder)
        self.cost_["search"], self.cost_["hypernet"] = star.seconds, hyper_s
        self.genotype_ = star.genotype
        self.history_.extend({"stage": "hypernet", **h} for h in hist)
        rows = sample_pool(hyper, star.genotype, p.pool, p.lambdas, self.seed + 101, search.keep)
        members, val = [], []
        for i, row in enumerate(rows):
            spec = {"name": "darts", "kwargs": {"genotype": row["genotype"].to_json(), "channels": p.channels, "layers": p.layers}}
            f = model_factory(spec, input_shape=data.input_shape, num_classes=data.num_classes)
            ens = self._train_stage(Ensemble.from_factory(f, seeds=self.member_seeds(1, f"cand{i}")), data, run, f"cand{i}")
            members.append(ens)
            val.append(ens.predict_proba(data.val)[0])
        t0 = time.perf_counter()
        probs = torch.stack(val)
        self.chosen_ = select_ensemble(probs, data.val.y, p.members)
        self.cost_["selection"] = time.perf_counter() - t0
        self.pool_ = [{"lambda": r["lambda"], "common": r["common"], "genotype": r["genotype"].to_json(),
                       "val_nll": ensemble_nll(v[None], data.val.y)} for r, v in zip(rows, val)]
        self.ensemble_ = Ensemble.cat([members[i] for i in self.chosen_])
