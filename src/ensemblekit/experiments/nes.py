"""The EdgeNES experiment (METHODS.md §6): search, hypernetwork, pool sampling, retraining of
every candidate as an independent unit of work, ensemble selection, and the baselines.

Every candidate retraining is one call of :func:`train_candidate` run through
:func:`~ensemblekit.experiments.backends.get_backend` ``.map``, so a distributed backend
can spread the pool over machines. Costs are wall-clock seconds per stage, split into
*finding* architectures (DARTS searches, hypernetwork) and *retraining* them.
"""

from __future__ import annotations

import os
import random
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from pydantic import Field, model_validator

from ..config import DataConfig
from ..data.dataset import Data
from ..ensemble import Ensemble
from ..models.registry import model_factory
from ..nas.genotype import Genotype, common_edges, perturb_genotype, random_genotype
from ..nas.search import HyperConfig, SearchConfig, darts_search, train_hypernet
from ..nas.select import ensemble_nll, select_ensemble
from ..seeding import derive_seed
from ..serialization import load_tensors, save_tensors, write_json
from ..training.checkpoint import RunDir
from ..training.config import StrictModel, TrainConfig
from .backends import Backend, get_backend

__all__ = ["NesConfig", "train_candidate", "sample_pool", "run_nes", "spearman", "anytime_curve", "curve_auc", "summarize", "BASELINES"]

BASELINES = ("edgenes", "darts", "random", "darts_ensemble", "deepens_darts", "nes_rs", "deviation")


class NesConfig(StrictModel):
    """``ensemblekit nes`` config.

    Args:
        data: the dataset (default mnist1d). seeds: repetitions (default [0]).
        search: supernet + DARTS search (:class:`SearchConfig`). hyper: hypernetwork (:class:`HyperConfig`).
        channels, layers: the retrained networks (default 8 channels, 2 cells).
        train: retraining of every candidate (:class:`TrainConfig`).
        pool: candidates sampled per pool (default 6). ensemble: n, the ensemble size (default 3).
        lambdas: ``grid`` (evenly spaced on [0, Lambda]) or ``uniform`` (lambda ~ U(0, Lambda)).
        deviation_k: edges of alpha* changed in the random-deviation baseline (default 4).
        methods: which of EdgeNES and the baselines to run (default all).
        backend: execution backend of the retrainings (default local). out: run folder root.
    """

    data: DataConfig = Field(default_factory=lambda: DataConfig(name="mnist1d"))
    seeds: list[int] = Field(default_factory=lambda: [0])
    search: SearchConfig = Field(default_factory=SearchConfig)
    hyper: HyperConfig = Field(default_factory=HyperConfig)
    channels: int = Field(8, ge=2)
    layers: int = Field(2, ge=1)
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(epochs=5, progress=False, device="cpu"))
    pool: int = Field(6, ge=1)
    ensemble: int = Field(3, ge=1)
    lambdas: str = Field("grid", pattern="^(grid|uniform)$")
    deviation_k: int = Field(4, ge=0)
    methods: list[str] = Field(default_factory=lambda: list(BASELINES))
    backend: str = "local"
    out: str = "runs"

    @model_validator(mode="after")
    def _check(self) -> "NesConfig":
        bad = [m for m in self.methods if m not in BASELINES]
        if bad:
            raise ValueError(f"unknown methods {bad}; valid: {', '.join(BASELINES)}")
        if self.ensemble > self.pool:
            raise ValueError(f"ensemble ({self.ensemble}) must be <= pool ({self.pool})")
        return self


def train_candidate(spec: Mapping[str, Any], *, data: Data, root: str) -> dict[str, Any]:
    """One unit of work: train the ``darts`` network of ``spec["genotype"]`` from scratch.

    Args:
        spec: ``{key, genotype (JSON form), seed, channels, layers, train (TrainConfig dict)}``.
        data: the dataset. root: run folder; this unit writes ``root/<key>/`` (checkpoints,
            ``probs.safetensors`` with validation and test probabilities) and resumes there.

    Returns:
        ``{key, val_nll, val_acc, test_acc, seconds}``.
    """
    folder = os.path.join(root, str(spec["key"]))
    factory = model_factory({"name": "darts", "kwargs": {"genotype": spec["genotype"], "channels": spec["channels"], "layers": spec["layers"]}},
                            input_shape=data.input_shape, num_classes=data.num_classes)
    from ..training.engine import Trainer

    trainer = Trainer(Ensemble.from_factory(factory, seeds=[int(spec["seed"])]), data, spec["train"], seed=int(spec["seed"]),
                      run=RunDir(folder), stage="train")
    ens = trainer.fit()
    val, test = ens.predict_proba(data.val)[0], ens.predict_proba(data.test)[0]
    save_tensors(os.path.join(folder, "probs.safetensors"), {"val": val, "test": test})
    return {"key": spec["key"], "val_nll": ensemble_nll(val[None], data.val.y), "val_acc": float((val.argmax(1) == data.val.y).float().mean()),
            "test_acc": float((test.argmax(1) == data.test.y).float().mean()), "seconds": trainer.wall_s}


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks for ties); NaN when one side is constant."""
    def ranks(v: Sequence[float]) -> np.ndarray:
        v = np.asarray(v, dtype=float)
        order = v.argsort(kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v))
        for val in np.unique(v):
            r[v == val] = r[v == val].mean()
        return r
    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def sample_pool(hyper: Any, star: Genotype, n: int, how: str, seed: int, keep: int = 2) -> list[dict[str, Any]]:
    """``n`` architectures from the hypernetwork at lambdas on a grid over [0, Lambda] or drawn
    uniformly; each row: ``{lambda, genotype, common}`` (discrete common edges with alpha*)."""
    lam_max = hyper.lam_max
    g = torch.Generator().manual_seed(int(seed))
    lams = np.linspace(0.0, lam_max, n).tolist() if how == "grid" else (torch.rand(n, generator=g) * lam_max).tolist()
    rows = []
    for lam in lams:
        geno = hyper.sample(lam, keep, generator=g)
        rows.append({"lambda": float(lam), "genotype": geno, "common": common_edges(geno, star)})
    return rows


def _pools(cfg: NesConfig, data: Data, seed: int, run: str) -> tuple[dict[str, list[Genotype]], dict[str, float], dict[str, Any]]:
    """Architecture pools of every method and the seconds spent finding them."""
    pools: dict[str, list[Genotype]] = {}
    find: dict[str, float] = {}
    star, net = darts_search(data, cfg.search, seed, os.path.join(run, "search"))
    info: dict[str, Any] = {"alpha_star": star.genotype.to_json(), "alpha_star_text": star.genotype.text()}
    pools["darts"] = pools["deepens_darts"] = [star.genotype]
    find["darts"] = find["deepens_darts"] = star.seconds
    parts: dict[str, list[float]] = {}
    if "edgenes" in cfg.methods:
        hyper, h_s, hist = train_hypernet(net, data, star, cfg.search, cfg.hyper, seed, os.path.join(run, "search"))
        rows = sample_pool(hyper, star.genotype, cfg.pool, cfg.lambdas, derive_seed(seed, "pool"), cfg.search.keep)
        grid = sample_pool(hyper, star.genotype, 4 * (int(hyper.lam_max) + 1), "grid", derive_seed(seed, "grid"), cfg.search.keep)
        pools["edgenes"] = [r["genotype"] for r in rows]
        find["edgenes"] = star.seconds + h_s
        parts["edgenes"] = [find["edgenes"]] + [0.0] * (cfg.pool - 1)
        info["pool"] = [{"lambda": r["lambda"], "common": r["common"], "genotype": r["genotype"].text()} for r in rows]
        info["grid"] = [{"lambda": r["lambda"], "common": r["common"]} for r in grid]
        info["spearman"] = spearman([r["lambda"] for r in grid], [r["common"] for r in grid])
        info["hyper_history"] = hist
    if "darts_ensemble" in cfg.methods:
        extra = [darts_search(data, cfg.search, derive_seed(seed, "darts", i), os.path.join(run, f"search{i}"))[0] for i in range(1, cfg.ensemble)]
        pools["darts_ensemble"] = [star.genotype] + [r.genotype for r in extra]
        find["darts_ensemble"] = star.seconds + sum(r.seconds for r in extra)
        parts["darts_ensemble"] = [star.seconds] + [r.seconds for r in extra]
    rng = random.Random(derive_seed(seed, "random"))
    pools["nes_rs"] = [random_genotype(rng.randrange(2**31), cfg.search.nodes, cfg.search.keep) for _ in range(cfg.pool)]
    pools["random"] = pools["nes_rs"][:1]
    find["nes_rs"] = find["random"] = 0.0
    k = min(cfg.deviation_k, star.genotype.num_kept)
    pools["deviation"] = [perturb_genotype(star.genotype, k, rng.randrange(2**31)) for _ in range(cfg.pool)]
    find["deviation"] = star.seconds
    info["find_parts"] = parts
    return {m: p for m, p in pools.items() if m in cfg.methods}, find, info


def _specs(cfg: NesConfig, pools: Mapping[str, list[Genotype]], seed: int) -> tuple[list[dict[str, Any]], dict[str, list[str]]]:
    """One retraining spec per distinct (genotype, init seed); ``members[method]`` lists its keys."""
    specs: dict[str, dict[str, Any]] = {}
    members: dict[str, list[str]] = {}
    for method, pool in pools.items():
        copies = cfg.ensemble if method == "deepens_darts" else 1
        keys = []
        for geno in pool:
            for c in range(copies):
                key = f"cand-{_digest(geno.key())}-{c}"
                specs.setdefault(key, {"key": key, "genotype": geno.to_json(), "seed": derive_seed(seed, "init", c),
                                       "channels": cfg.channels, "layers": cfg.layers, "train": cfg.train.model_dump()})
                keys.append(key)
        members[method] = keys
    return list(specs.values()), members


def _digest(text: str) -> str:
    import hashlib

    return hashlib.sha1(text.encode()).hexdigest()[:10]


def _evaluate(method: str, keys: list[str], rows: Mapping[str, dict[str, Any]], data: Data, root: str, n: int) -> dict[str, Any]:
    """Select n members from a method's trained pool on validation NLL, test the ensemble."""
    val = torch.stack([load_tensors(os.path.join(root, k, "probs.safetensors"))[0]["val"] for k in keys])
    test = torch.stack([load_tensors(os.path.join(root, k, "probs.safetensors"))[0]["test"] for k in keys])
    size = 1 if method in ("darts", "random") else min(n, len(keys))
    chosen = select_ensemble(val, data.val.y, size) if len(keys) > size else list(range(len(keys)))
    p = test[chosen].mean(0)
    return {"chosen": [keys[i] for i in chosen], "test_acc": float((p.argmax(1) == data.test.y).float().mean()),
            "test_nll": ensemble_nll(test[chosen], data.test.y), "retrain_s": float(sum(rows[k]["seconds"] for k in keys))}


def run_nes(cfg: NesConfig, run_dir: str, data: Data | None = None, backend: Backend | None = None) -> dict[str, Any]:
    """Run EdgeNES and the baselines for every seed; write ``nes.json`` and ``nes.md`` into ``run_dir``.

    ``backend``: an execution backend for the retrainings (default: ``get_backend(cfg.backend)``).

    Returns:
        ``{"runs": [per-seed dict], "summary": {method: {acc_mean, acc_std, find_s, retrain_s}}}``.

    Raises:
        ConfigError: a candidate whose training failed (unknown methods and n > pool are refused by NesConfig).
    """
    from ..errors import ConfigError

    data = data if data is not None else cfg.data.load()
    backend = backend if backend is not None else get_backend(cfg.backend)
    runs = []
    for seed in cfg.seeds:
        run = os.path.join(run_dir, f"seed{seed}")
        pools, find, info = _pools(cfg, data, seed, run)
        specs, members = _specs(cfg, pools, seed)
        outcomes = backend.map(train_candidate, specs, context={"data": data, "root": os.path.join(run, "pool")})
        failed = [o for o in outcomes if not o.ok]
        if failed:
            raise ConfigError(f"nes: {len(failed)} candidate(s) failed, first: {failed[0].key}: {failed[0].error}")
        rows = {o.key: o.value for o in outcomes}
        results = {m: {**_evaluate(m, keys, rows, data, os.path.join(run, "pool"), cfg.ensemble), "find_s": find[m]} for m, keys in members.items()}
        for m, steps in info["find_parts"].items():
            results[m]["curve"] = anytime_curve(members[m], steps, rows, data, os.path.join(run, "pool"), cfg.ensemble)
        _add_auc(results)
        runs.append({"seed": seed, "results": results, **info})
        write_json(os.path.join(run, "result.json"), runs[-1])
    summary = summarize(runs)
    write_json(os.path.join(run_dir, "nes.json"), {"runs": runs, "summary": summary})
    from ..report.nes_plots import nes_markdown, write_nes_plots

    with open(os.path.join(run_dir, "nes.md"), "w") as f:
        f.write(nes_markdown(summary, runs))
    write_nes_plots(runs, summary, run_dir)
    return {"runs": runs, "summary": summary}


def anytime_curve(keys: list[str], find_parts: list[float], rows: Mapping[str, dict[str, Any]], data: Data, root: str, n: int) -> list[list[float]]:
    """Accuracy-vs-time points ``[t_k, acc_k]``: after the k-th architecture has been found
    (``find_parts[k]`` seconds) and retrained, the test accuracy of the best ensemble of
    <= n members chosen on validation from the first k candidates."""
    val = torch.stack([load_tensors(os.path.join(root, k, "probs.safetensors"))[0]["val"] for k in keys])
    test = torch.stack([load_tensors(os.path.join(root, k, "probs.safetensors"))[0]["test"] for k in keys])
    t, out = 0.0, []
    for k in range(len(keys)):
        t += find_parts[k] + rows[keys[k]]["seconds"]
        chosen = select_ensemble(val[: k + 1], data.val.y, min(n, k + 1))
        out.append([t, float((test[chosen].mean(0).argmax(1) == data.test.y).float().mean())])
    return out


def curve_auc(curve: Sequence[Sequence[float]], horizon: float) -> float:
    """Normalised area under a step accuracy-vs-time curve on ``[0, horizon]``: accuracy 0
    until the first point, then the last reached accuracy (a higher value is a method that
    is accurate sooner)."""
    area, prev_t, prev_acc = 0.0, 0.0, 0.0
    for t, acc in curve:
        t = min(t, horizon)
        area += (t - prev_t) * prev_acc
        prev_t, prev_acc = t, acc
    return (area + (horizon - prev_t) * prev_acc) / horizon


def _add_auc(results: dict[str, dict[str, Any]]) -> None:
    curves = {m: r["curve"] for m, r in results.items() if "curve" in r}
    if not curves:
        return
    horizon = max(c[-1][0] for c in curves.values())
    for m, c in curves.items():
        results[m]["auc"] = curve_auc(c, horizon)


def summarize(runs: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Per method over seeds: test accuracy mean/std (%), mean find / retrain seconds."""
    out: dict[str, dict[str, float]] = {}
    for m in BASELINES:
        rs = [r["results"][m] for r in runs if m in r["results"]]
        if not rs:
            continue
        acc = np.array([100 * r["test_acc"] for r in rs])
        out[m] = {"acc_mean": float(acc.mean()), "acc_std": float(acc.std()), "find_s": float(np.mean([r["find_s"] for r in rs])),
                  "retrain_s": float(np.mean([r["retrain_s"] for r in rs])), "seeds": len(rs)}
        if all("auc" in r for r in rs):
            out[m]["auc"] = float(np.mean([r["auc"] for r in rs]))
    return out
