"""``ensemblekit varhyper``: hypernetwork forms vs separate variational and L2 nets per lambda.

A preset (:mod:`~ensemblekit.experiments.presets`) over the registered methods ``varhyper``
(one kind ``hyper_<form>`` per form), ``variational`` (``separate``) and ``l2_nets``
(``l2``): kinds x seeds, one cell each, trained into ``<run>/<kind>-s<seed>/`` by the same
machinery as a ``compare`` cell (the same command resumes) and run on the execution
backend. Each row's ``details`` hold test accuracy ``(lambda x pruned share)`` and KL per
lambda (:meth:`~ensemblekit.methods.varhyper.FamilyMethod.details`); the summary,
``varhyper.json`` / ``varhyper.md``, holds their mean ± std over seeds, and the plots are
written by :mod:`ensemblekit.report.varhyper_plots`. Paper: Grebenkova, Bakhteev & Strijov,
"Variational optimization of a deep learning model with complexity control" (MIPT, 2020).
Background: ``docs/methods.md`` (variational hypernetwork).
"""

from __future__ import annotations

import os
from typing import Any, Literal, Mapping, Sequence

import numpy as np
from pydantic import Field

from ..config import DataConfig, ModelConfig
from ..data.dataset import Data
from ..methods.base import METHODS
from ..report.tables import mean_std
from ..serialization import write_json
from ..training.config import TrainConfig
from ..varhyper.prune import DEFAULT_FRACTIONS
from ..varhyper.settings import FamilySettings
from .backends import Backend
from .presets import Preset, Summary, TableSpec, preset_cell, run_preset

__all__ = ["VarHyperConfig", "PRESET", "kinds", "varhyper_cells", "run_varhyper"]


class VarHyperConfig(FamilySettings):
    """``ensemblekit varhyper`` settings.

    Attributes:
        data, model, train: as in ``train`` (``train`` drives every training; ``data_order: shared``).
        forms: hypernetwork forms to train (default linear, lowrank, piecewise).
        baselines: per-lambda baselines to train (default separate, l2).
        lambdas: the evaluation grid (default 1e-3, ..., 1e2). fractions: pruned shares (0..0.9).
        log10_range, samples, prior_std, init_log_sigma, rank, hidden, pivots, weighting: see ``varhyper``.
        seeds: run seeds (default 0, 1, 2). backend: execution backend (default local).
    """

    data: DataConfig = Field(default_factory=lambda: DataConfig(name="digits"))
    model: ModelConfig = Field(default_factory=lambda: ModelConfig(name="mlp", kwargs={"hidden": [100]}))
    train: TrainConfig = Field(default_factory=TrainConfig)
    forms: list[Literal["linear", "lowrank", "piecewise"]] = Field(default_factory=lambda: ["linear", "lowrank", "piecewise"], min_length=1)
    baselines: list[Literal["separate", "l2"]] = Field(default_factory=lambda: ["separate", "l2"])
    fractions: list[float] = Field(default_factory=lambda: list(DEFAULT_FRACTIONS), min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    backend: str = "local"
    out: str = "runs/varhyper"


def kinds(cfg: VarHyperConfig) -> dict[str, dict[str, Any]]:
    """Each kind of the config and the method entry behind it: ``hyper_<form>`` is ``varhyper`` of
    that form and ``separate`` the ``variational`` nets, both with the config's family settings;
    ``l2`` is ``l2_nets`` at the config's lambdas (the only family setting it trains with). Every
    kind tabulates accuracy at the config's ``fractions``."""
    family = {k: getattr(cfg, k) for k in FamilySettings.model_fields}
    baselines = {"separate": {"name": "variational", **family}, "l2": {"name": "l2_nets", "lambdas": cfg.lambdas}}
    out = {f"hyper_{form}": {"name": "varhyper", "form": form, **family} for form in cfg.forms}
    out.update({kind: baselines[kind] for kind in cfg.baselines})
    return {kind: {**entry, "label": kind, "fractions": cfg.fractions} for kind, entry in out.items()}


def varhyper_cells(cfg: VarHyperConfig, run_dir: str = "") -> list[list[dict[str, Any]]]:
    """One stage: every kind for every seed."""
    entries = kinds(cfg)
    return [[preset_cell(cfg, key=f"{kind}-s{seed}", method=entry, seed=seed, train=cfg.train, model=cfg.model.spec())
             for seed in cfg.seeds for kind, entry in entries.items()]]


def _unit_row(spec: Mapping[str, Any], row: Mapping[str, Any]) -> dict[str, Any]:
    """A cell's row as ``varhyper.json`` keeps it: accuracy ``(lambda x pruned share)``, KL and cost."""
    d = row["details"]
    return {"kind": spec["label"], "seed": int(spec["seed"]), "acc": d["accuracy"], "kl": d["kl"], "train_s": row["wall_s"],
            "train_flops": row["cost"]["train_flops"], "parameters": row["cost"]["parameters"],
            "provenance": {"code": (row.get("provenance") or {}).get("code", "unrecorded")}, "code_accepted": row.get("code_accepted")}


def _over_seeds(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in dict.fromkeys(r["kind"] for r in rows):
        mine = [r for r in rows if r["kind"] == kind]
        acc = np.array([r["acc"] for r in mine])  # (S, L, F)
        kls = [r["kl"] for r in mine if r["kl"] is not None]
        out[kind] = {"acc_mean": acc.mean(0).tolist(), "acc_std": acc.std(0).tolist(), "seeds": len(mine),
                     "kl_mean": np.mean(kls, 0).tolist() if kls else None, "train_s": mean_std([r["train_s"] for r in mine])}
    return out


def _summary(cfg: VarHyperConfig, cells: Sequence[tuple[Mapping[str, Any], dict[str, Any]]], data: Data, run_dir: str,
             plots: bool) -> Summary:
    """Mean ± std over seeds per kind; ``varhyper.json``, the table (each kind's training cost as
    its method describes it) and the plots."""
    from ..report.varhyper_plots import varhyper_markdown, write_varhyper_plots

    ok = [(spec, row) for spec, row in cells if "failed" not in row]
    rows = [_unit_row(spec, row) for spec, row in ok]
    summary = _over_seeds(rows)
    failed = [f"{spec['key']}: {row['failed']}" for spec, row in cells if "failed" in row]
    results = {"data": data.name, "lambdas": cfg.lambdas, "fractions": cfg.fractions, "summary": summary, "rows": rows, "failed": failed}
    write_json(os.path.join(run_dir, "varhyper.json"), results)
    runs = {spec["label"]: METHODS.get(row["name"]).family_runs(cfg.lambdas) for spec, row in ok}
    md = varhyper_markdown(summary, cfg.lambdas, cfg.fractions, runs, title=f"varhyper on {data.name}", seeds=len(cfg.seeds))
    if plots and summary:
        results["plots"] = [str(p) for p in write_varhyper_plots(results, run_dir)]
    return Summary(results, md, "varhyper.md", f"Variational hypernetwork family on {data.name}")


def _show(cfg: VarHyperConfig, results: Mapping[str, Any], data: Data, run_dir: str) -> list[Any]:
    shown = [j for j, f in enumerate(cfg.fractions) if round(f, 2) in (0.0, 0.8)] or [0]
    rows = []
    for kind, s in results["summary"].items():
        for i, lam in enumerate(cfg.lambdas):
            rows.append([kind, f"{lam:g}", *[f"{100 * s['acc_mean'][i][j]:.1f}" for j in shown], f"{s['train_s'][0]:.0f}" if i == 0 else ""])
    out: list[Any] = [TableSpec(f"test accuracy % on {data.name} (mean of {len(cfg.seeds)} seeds)",
                                ["model", "lambda", *[f"{cfg.fractions[j]:.0%} pruned" for j in shown], "train s"], rows)]
    return out + [f"table {run_dir}/varhyper.md, plots {run_dir}/varhyper_pruning.png, varhyper_lambda.png, varhyper_kl.png"]


PRESET = Preset("varhyper", VarHyperConfig, cells=varhyper_cells, summarize=_summary, show=_show)


def run_varhyper(cfg: VarHyperConfig, run_dir: str, *, data: Data | None = None, plots: bool = True, backend: Backend | None = None,
                 force: bool = False, accept_code_change: bool = False) -> dict[str, Any]:
    """Train every form and baseline for every seed, evaluate, write ``varhyper.{json,md}`` and plots.

    ``backend``: an execution backend for the cells (default: ``get_backend(cfg.backend)``).
    A cell folder holding work of another spec makes the call refuse before anything runs,
    unless ``force`` (it is retrained); one computed by other code likewise, unless ``force``
    or ``accept_code_change`` (kept and recorded).

    Returns:
        ``{"data", "lambdas", "fractions", "summary": {kind: {acc_mean, acc_std, kl_mean, train_s, seeds}},
        "rows": [per cell], "failed": [...], "plots": [...]}``.
    """
    return run_preset(PRESET, cfg, run_dir, data=data, backend=backend, force=force, accept_code_change=accept_code_change,
                      plots=plots).results
