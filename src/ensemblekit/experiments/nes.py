"""``ensemblekit nes``: EdgeNES and its baselines, a preset over the registered search methods.

For every seed, every method in ``methods`` (``edgenes``, ``darts``, ``random_arch``,
``darts_ensemble``, ``deepens_darts``, ``nes_rs``, ``nes_deviation``) is built with the
config's shared settings, fitted into ``<run>/seed<s>/<method>`` and recorded through the
one results path (:func:`~ensemblekit.experiments.results.record_result`), exactly as a
``compare`` cell of the same method and seed would be: the same numbers come out of both.
The methods share ``<run>/cache``, so the DARTS search is run once per seed and an
architecture two methods both need (alpha* with seed 0, NES-RS's first random draw) is
trained once. Candidates run on the execution backend (``--backend ray`` spreads a pool
over a cluster).

The preset adds what only a side-by-side run can show: the area under each method's
accuracy-vs-time curve on a common horizon, EdgeNES's Spearman correlation of lambda with
the common-edge count, ``nes.md``, ``nes.json`` and the plots. Background and defaults:
``docs/methods.md`` (EdgeNES).
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np
from pydantic import Field, model_validator

from ..config import DataConfig
from ..data.dataset import Data
from ..methods.base import create_method
from ..nas.pool import curve_auc
from ..nas.search import HyperConfig, SearchConfig
from ..serialization import atomic_write_text, write_json
from ..schema import StrictModel
from ..training.config import TrainConfig
from .backends import Backend, get_backend
from .results import record_result
from .provenance import code_note
from .units import claim, finished_row, unit_hash

__all__ = ["NesConfig", "NES_METHODS", "nes_method", "run_nes", "summarize"]

NES_METHODS = ("edgenes", "darts", "random_arch", "darts_ensemble", "deepens_darts", "nes_rs", "nes_deviation")


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
        methods: which of EdgeNES and the baselines to run (default all, registered method names).
        backend: execution backend of the candidates (default local). out: run folder root.
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
    methods: list[str] = Field(default_factory=lambda: list(NES_METHODS))
    backend: str = "local"
    out: str = "runs"

    @model_validator(mode="after")
    def _check(self) -> "NesConfig":
        bad = [m for m in self.methods if m not in NES_METHODS]
        if bad:
            raise ValueError(f"unknown methods {bad}; valid: {', '.join(NES_METHODS)}")
        if self.ensemble > self.pool:
            raise ValueError(f"ensemble ({self.ensemble}) must be <= pool ({self.pool})")
        return self


def nes_method(cfg: NesConfig, name: str, seed: int) -> Any:
    """The registered method ``name`` with the preset's shared settings (what a compare cell of it would hold)."""
    params: dict[str, Any] = {"search": cfg.search.model_dump(), "channels": cfg.channels, "layers": cfg.layers}
    if name in ("edgenes", "nes_rs", "nes_deviation"):
        params.update(pool=cfg.pool, members=cfg.ensemble)
    if name in ("darts_ensemble", "deepens_darts"):
        params["members"] = cfg.ensemble
    if name == "edgenes":
        params.update(hyper=cfg.hyper.model_dump(), lambdas=cfg.lambdas)
    if name == "nes_deviation":
        params["k"] = cfg.deviation_k
    return create_method(name, seed=seed, train=cfg.train, **params)


def _result(row: Mapping[str, Any]) -> dict[str, Any]:
    d = row["details"]
    return {"chosen": d["chosen"], "test_acc": row["test"]["accuracy"], "test_nll": row["test"]["nll"], "find_s": d["find_s"],
            "retrain_s": d["retrain_s"], "curve": d["curve"], "train_flops": row["cost"]["train_flops"]}


def _unit(cfg: NesConfig, name: str, seed: int, data: Data) -> tuple[Any, dict[str, Any], str]:
    method = nes_method(cfg, name, seed)
    spec = {"method": name, **method.get_params()}
    return method, spec, unit_hash(spec, data.digest())


def run_nes(cfg: NesConfig, run_dir: str, data: Data | None = None, backend: Backend | None = None, force: bool = False,
            accept_code_change: bool = False) -> dict[str, Any]:
    """Run EdgeNES and the baselines for every seed; write ``nes.json`` and ``nes.md`` into ``run_dir``.

    ``backend``: an execution backend for the candidates (default: ``get_backend(cfg.backend)``).
    Running the same command again reuses every finished method (its ``results.json``) whose
    spec is unchanged; a method folder of another spec makes the call refuse before anything
    runs, unless ``force`` (it is retrained); one computed by other code likewise, unless
    ``force`` or ``accept_code_change`` (kept, recorded, and named in ``nes.md``).

    Returns:
        ``{"runs": [per-seed dict], "summary": {method: {acc_mean, acc_std, find_s, retrain_s, auc}}}``.
    """
    data = data if data is not None else cfg.data.load()
    folders = {(s, n): os.path.join(run_dir, f"seed{s}", n) for s in cfg.seeds for n in cfg.methods}
    if not force:
        for (seed, name), folder in folders.items():
            finished_row(folder, _unit(cfg, name, seed, data)[2], accept_code_change=accept_code_change)
    backend = backend if backend is not None else get_backend(cfg.backend)
    cache = os.path.join(run_dir, "cache")
    runs, rows = [], []
    for seed in cfg.seeds:
        results: dict[str, dict[str, Any]] = {}
        info: dict[str, Any] = {}
        for name in cfg.methods:
            folder = folders[(seed, name)]
            method, spec, digest = _unit(cfg, name, seed, data)
            row = finished_row(folder, digest, force=force, accept_code_change=accept_code_change)
            if row is None:
                with claim(folder, digest, spec):
                    method.fit(data, run_dir=folder, cache_dir=cache, backend=backend)
                    row = record_result(method, data, folder, plots=False, report=False, extra={"spec_hash": digest})
            rows.append(row)
            results[name] = _result(row)
            if name == "edgenes":
                d = row["details"]
                info.update(alpha_star=d["alpha_star"], alpha_star_text=d["alpha_star_text"], spearman=d["spearman"], grid=d["grid"],
                            hyper_history=d["hyper_history"],
                            pool=[{"lambda": p["lambda"], "common": p["common"], "genotype": p["genotype"]} for p in d["pool"]])
        _add_auc(results)
        runs.append({"seed": seed, "results": results, **info})
        write_json(os.path.join(run_dir, f"seed{seed}", "result.json"), runs[-1])
    summary = summarize(runs)
    write_json(os.path.join(run_dir, "nes.json"), {"runs": runs, "summary": summary})
    from ..report.nes_plots import nes_markdown, write_nes_plots

    md = nes_markdown(summary, runs)
    note = code_note(rows)
    md += f"\n{note}" if note else ""
    atomic_write_text(os.path.join(run_dir, "nes.md"), md)
    write_nes_plots(runs, summary, run_dir)
    from .curve import write_preset_html

    write_preset_html(run_dir, "EdgeNES and its baselines", md, cfg)
    return {"runs": runs, "summary": summary}


def _add_auc(results: dict[str, dict[str, Any]]) -> None:
    """Area under each method's accuracy-vs-time curve, on the horizon of the slowest method."""
    curves = {m: r["curve"] for m, r in results.items() if r.get("curve")}
    if not curves:
        return
    horizon = max(c[-1][0] for c in curves.values())
    for m, c in curves.items():
        results[m]["auc"] = curve_auc(c, horizon)


def summarize(runs: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Per method over seeds: test accuracy mean/std (%), mean find / retrain seconds, AUC."""
    out: dict[str, dict[str, float]] = {}
    for m in NES_METHODS:
        rs = [r["results"][m] for r in runs if m in r["results"]]
        if not rs:
            continue
        acc = np.array([100 * r["test_acc"] for r in rs])
        out[m] = {"acc_mean": float(acc.mean()), "acc_std": float(acc.std()), "find_s": float(np.mean([r["find_s"] for r in rs])),
                  "retrain_s": float(np.mean([r["retrain_s"] for r in rs])), "seeds": len(rs)}
        if all("auc" in r for r in rs):
            out[m]["auc"] = float(np.mean([r["auc"] for r in rs]))
    return out
