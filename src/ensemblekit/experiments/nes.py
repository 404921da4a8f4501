"""``ensemblekit nes``: EdgeNES and its baselines, a preset over the registered search methods.

The preset (:mod:`~ensemblekit.experiments.presets`) is the config's methods (``edgenes``,
``darts``, ``random_arch``, ``darts_ensemble``, ``deepens_darts``, ``nes_rs``,
``nes_deviation``) x seeds: one cell each, trained into ``<run>/seed<s>/<method>`` by the
same machinery as a ``compare`` cell (a cell of the same method and seed gives the same
numbers in both). Each method takes the config's shared settings its hyperparameters
declare (``search``, ``channels``, ``layers``; ``pool``, ``members`` (``ensemble``),
``hyper``, ``lambdas``, ``k`` (``deviation_k``) where it has them). The cells share
``<run>/cache``, so the DARTS search is run once per seed and an architecture two methods
both need (alpha* with seed 0, NES-RS's first random draw) is trained once; the cells run
one after another here and their candidates on the execution backend (``--backend ray``
spreads a pool over a cluster).

The summary adds what only a side-by-side run shows: the area under each method's
accuracy-vs-time curve on a common horizon, the Spearman correlation of lambda with the
common-edge count of the method that reports one (EdgeNES's diversity control),
``nes.md``, ``nes.json`` and the plots. Papers: Zaidi et al., "Neural Ensemble Search for
Uncertainty Estimation and Dataset Shift" (NeurIPS 2021); Babkin & Bakhteev (MIPT, 2024).
Background and defaults: ``docs/methods.md`` (EdgeNES).
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np
from pydantic import Field, model_validator

from ..config import DataConfig
from ..data.dataset import Data
from ..methods.base import METHODS
from ..nas.pool import curve_auc
from ..nas.search import HyperConfig, SearchConfig
from ..schema import StrictModel
from ..serialization import write_json
from ..training.config import TrainConfig
from .backends import Backend
from .presets import Preset, Summary, TableSpec, preset_cell, run_preset, shared_params

__all__ = ["NesConfig", "NES_METHODS", "PRESET", "nes_cells", "run_nes", "summarize"]

NES_METHODS = ("edgenes", "darts", "random_arch", "darts_ensemble", "deepens_darts", "nes_rs", "nes_deviation")

#: What a method reports of EdgeNES's diversity control (its ``details``), kept per seed in ``nes.json``.
_DIVERSITY = ("alpha_star", "alpha_star_text", "spearman", "grid", "hyper_history")


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

    def shared(self) -> dict[str, Any]:
        """The settings every method may take, under its hyperparameters' names."""
        return {"search": self.search.model_dump(), "channels": self.channels, "layers": self.layers, "pool": self.pool,
                "members": self.ensemble, "hyper": self.hyper.model_dump(), "lambdas": self.lambdas, "k": self.deviation_k}


def nes_cells(cfg: NesConfig, run_dir: str = "") -> list[list[dict[str, Any]]]:
    """One stage: every method for every seed, each with the shared settings its ``Params`` declare."""
    shared = cfg.shared()
    return [[preset_cell(cfg, key=f"{name}-s{seed}", folder=os.path.join(f"seed{seed}", name), seed=seed, train=cfg.train,
                         method={"name": name, "label": name, **shared_params(name, shared)})
             for seed in cfg.seeds for name in cfg.methods]]


def _result(row: Mapping[str, Any]) -> dict[str, Any]:
    d = row["details"]
    return {"chosen": d["chosen"], "test_acc": row["test"]["accuracy"], "test_nll": row["test"]["nll"], "find_s": d["find_s"],
            "retrain_s": d["retrain_s"], "curve": d["curve"], "train_flops": row["cost"]["train_flops"]}


def _diversity(details: Mapping[str, Any]) -> dict[str, Any]:
    """The diversity control a method reports (its lambdas and common edges), or nothing."""
    if "spearman" not in details:
        return {}
    pool = [{"lambda": p["lambda"], "common": p["common"], "genotype": p["genotype"]} for p in details["pool"]]
    return {**{k: details[k] for k in _DIVERSITY}, "pool": pool}


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


def _summary(cfg: NesConfig, cells: Sequence[tuple[Mapping[str, Any], dict[str, Any]]], data: Data, run_dir: str, plots: bool) -> Summary:
    """Per seed: every method's result, the AUCs and the diversity control (``seed<s>/result.json``);
    over seeds: :func:`summarize`; ``nes.json``, the table and the plots."""
    rows = {(int(spec["seed"]), spec["label"]): row for spec, row in cells if "failed" not in row}
    runs = []
    for seed in cfg.seeds:
        results: dict[str, dict[str, Any]] = {}
        info: dict[str, Any] = {}
        for name in cfg.methods:
            if (seed, name) in rows:
                results[name] = _result(rows[(seed, name)])
                info.update(_diversity(rows[(seed, name)]["details"]))
        _add_auc(results)
        runs.append({"seed": seed, "results": results, **info})
        write_json(os.path.join(run_dir, f"seed{seed}", "result.json"), runs[-1])
    summary = summarize(runs)
    write_json(os.path.join(run_dir, "nes.json"), {"runs": runs, "summary": summary})
    from ..report.nes_plots import nes_markdown, write_nes_plots

    labels = {m: METHODS.get(m).title for m in summary}
    if plots:
        write_nes_plots(runs, summary, run_dir, labels)
    return Summary({"runs": runs, "summary": summary}, nes_markdown(summary, runs, labels), "nes.md", "EdgeNES and its baselines")


def _show(cfg: NesConfig, results: Mapping[str, Any], data: Data, run_dir: str) -> list[Any]:
    rows = [[METHODS.get(m).title, f"{s['acc_mean']:.2f} ± {s['acc_std']:.2f}", f"{100 - s['acc_mean']:.2f}", f"{s['find_s']:.0f}",
             f"{s['retrain_s']:.0f}"] for m, s in results["summary"].items()]
    out: list[Any] = [TableSpec(f"ensembles of {cfg.ensemble} from pools of {cfg.pool}, {data.name} test split, {len(cfg.seeds)} seed(s)",
                                ["method", "acc %", "error %", "find s", "retrain s"], rows)]
    out += [f"seed {r['seed']}: Spearman(lambda, common edges with alpha*) = {r['spearman']:.3f}" for r in results["runs"] if "spearman" in r]
    return out + [f"table in {run_dir}/nes.md, plots {run_dir}/nes_common_edges.png, {run_dir}/nes_accuracy_cost.png"]


PRESET = Preset("nes", NesConfig, cells=nes_cells, summarize=_summary, show=_show, backend_runs="candidates")


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
    return run_preset(PRESET, cfg, run_dir, data=data, backend=backend, force=force, accept_code_change=accept_code_change).results
