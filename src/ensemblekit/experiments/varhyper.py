"""``ensemblekit varhyper``: hypernetwork forms vs separate variational and L2 nets per lambda.

A preset over the registered methods ``varhyper`` (one per form), ``variational``
(``separate``) and ``l2_nets`` (``l2``): every unit of work (one kind and seed) builds the
method with the config's settings (members at the config's lambdas), fits it into
``<run>/<kind>-s<seed>/`` (the same command resumes) and records it through the one results
path, whose ``details`` hold test accuracy ``(lambda x pruned share)`` and KL per lambda.
Units run on an execution backend. ``varhyper.json`` / ``varhyper.md`` hold the mean ± std
over seeds; plots are written by :mod:`ensemblekit.report.varhyper_plots`. Background:
``docs/methods.md`` (variational hypernetwork).
"""

from __future__ import annotations

import os
from typing import Any, Literal, Mapping

import numpy as np
import yaml
from pydantic import Field

from ..config import DataConfig, ModelConfig
from ..data.dataset import Data
from ..methods.base import Method, create_method
from ..report.tables import markdown_table, mean_std
from ..serialization import atomic_write_text, write_json
from ..training.config import TrainConfig
from ..varhyper.prune import DEFAULT_FRACTIONS
from ..varhyper.settings import FamilySettings
from .backends import Backend, get_backend
from .results import record_result
from .provenance import code_note
from .units import claim, finished_row, unit_hash

__all__ = ["VarHyperConfig", "run_varhyper", "varhyper_unit", "varhyper_method"]


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


def varhyper_method(cfg: VarHyperConfig, kind: str, seed: int) -> Method:
    """The registered method behind a kind: ``hyper_<form>`` -> ``varhyper``, ``separate`` ->
    ``variational``, ``l2`` -> ``l2_nets``, with the config's family settings."""
    family = {k: getattr(cfg, k) for k in FamilySettings.model_fields}
    common = {"model": cfg.model.spec(), "seed": seed, "train": cfg.train, "fractions": cfg.fractions}
    if kind.startswith("hyper_"):
        return create_method("varhyper", form=kind[len("hyper_"):], **common, **family)
    if kind == "separate":
        return create_method("variational", **common, **family)
    return create_method("l2_nets", **common, lambdas=cfg.lambdas)


def _digest(spec: Mapping[str, Any], data: Data) -> tuple[Any, dict[str, Any], str]:
    cfg = VarHyperConfig(**spec["config"])
    method = varhyper_method(cfg, spec["kind"], int(spec["seed"]))
    unit = {"kind": spec["kind"], **method.get_params()}
    return method, unit, unit_hash(unit, data.digest())


def varhyper_unit(spec: Mapping[str, Any], data: Data, force: bool = False, accept_code_change: bool = False) -> dict[str, Any]:
    """Train one kind for one seed (resuming from ``spec['dir']``), record it; returns the unit's summary row.

    Keyed by the hash of the method it trains (:mod:`~ensemblekit.experiments.units`)."""
    kind, seed = spec["kind"], int(spec["seed"])
    method, unit, digest = _digest(spec, data)
    row = finished_row(spec["dir"], digest, force=force, accept_code_change=accept_code_change)
    if row is None:
        with claim(spec["dir"], digest, unit):
            method.fit(data, run_dir=spec["dir"])
            row = record_result(method, data, spec["dir"], label=kind, plots=False, report=False, extra={"spec_hash": digest})
    d = row["details"]
    return {"kind": kind, "seed": seed, "acc": d["accuracy"], "kl": d["kl"], "train_s": row["wall_s"],
            "train_flops": row["cost"]["train_flops"], "parameters": row["cost"]["parameters"],
            "provenance": {"code": (row.get("provenance") or {}).get("code", "unrecorded")}, "code_accepted": row.get("code_accepted")}


def _summary(rows: list[dict[str, Any]], cfg: VarHyperConfig) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in dict.fromkeys(r["kind"] for r in rows):
        mine = [r for r in rows if r["kind"] == kind]
        acc = np.array([r["acc"] for r in mine])  # (S, L, F)
        kls = [r["kl"] for r in mine if r["kl"] is not None]
        out[kind] = {"acc_mean": acc.mean(0).tolist(), "acc_std": acc.std(0).tolist(), "seeds": len(mine),
                     "kl_mean": np.mean(kls, 0).tolist() if kls else None, "train_s": mean_std([r["train_s"] for r in mine])}
    return out


def _markdown(summary: Mapping[str, Any], cfg: VarHyperConfig, data_name: str) -> str:
    shown = [j for j, f in enumerate(cfg.fractions) if round(f, 2) in (0.0, 0.6, 0.8, 0.9)] or list(range(len(cfg.fractions)))
    head = ["model", "lambda", "KL(q, prior)", *[f"acc @ {cfg.fractions[j]:.0%} pruned" for j in shown], "train s / run"]
    body = []
    for kind, s in summary.items():
        for i, lam in enumerate(cfg.lambdas):
            cells = [f"{100 * s['acc_mean'][i][j]:.1f} ± {100 * s['acc_std'][i][j]:.1f}" for j in shown]
            cost = f"{s['train_s'][0]:.0f}" + (" (one run, all lambdas)" if kind.startswith("hyper_") else f" ({len(cfg.lambdas)} nets)")
            kl = f"{s['kl_mean'][i]:.0f}" if s.get("kl_mean") else "-"
            body.append([kind, f"{lam:g}", kl, *cells, cost if i == 0 else ""])
    return (f"# varhyper on {data_name}: test accuracy % (mean ± std over {len(cfg.seeds)} seeds)\n\n"
            + markdown_table(head, body) + "\n\nWall-clock seconds include other processes' load.\n")


def run_varhyper(cfg: VarHyperConfig, run_dir: str, *, data: Data | None = None, plots: bool = True, backend: Backend | None = None,
                 force: bool = False, accept_code_change: bool = False) -> dict[str, Any]:
    """Train every form and baseline for every seed, evaluate, write ``varhyper.{json,md}`` and plots.

    ``backend``: an execution backend for the units (default: ``get_backend(cfg.backend)``).
    A unit folder holding work of another spec makes the call refuse before anything runs,
    unless ``force`` (it is retrained); one computed by other code likewise, unless ``force``
    or ``accept_code_change`` (kept and recorded)."""
    data = data if data is not None else cfg.data.load()
    resolved = cfg.model_dump(mode="json")
    kinds = [f"hyper_{f}" for f in cfg.forms] + list(cfg.baselines)
    specs = [{"key": f"{k}-s{s}", "kind": k, "seed": s, "dir": os.path.join(run_dir, f"{k}-s{s}"), "config": resolved}
             for s in cfg.seeds for k in kinds]
    if not force:
        for spec in specs:
            finished_row(spec["dir"], _digest(spec, data)[2], accept_code_change=accept_code_change)
    os.makedirs(run_dir, exist_ok=True)
    atomic_write_text(os.path.join(run_dir, "config.yaml"), yaml.safe_dump(resolved, sort_keys=False))
    backend = backend if backend is not None else get_backend(cfg.backend)
    outcomes = backend.map(varhyper_unit, specs, context={"data": data, "force": force, "accept_code_change": accept_code_change})
    failed = [f"{o.key}: {o.error}" for o in outcomes if not o.ok]
    rows = [o.value for o in outcomes if o.ok and o.value is not None]
    summary = _summary(rows, cfg)
    results = {"data": data.name, "lambdas": cfg.lambdas, "fractions": cfg.fractions, "summary": summary, "rows": rows, "failed": failed}
    write_json(os.path.join(run_dir, "varhyper.json"), results)
    md = _markdown(summary, cfg, data.name)
    note = code_note(rows)
    md += f"\n{note}" if note else ""
    atomic_write_text(os.path.join(run_dir, "varhyper.md"), md)
    if plots and summary:
        from ..report.varhyper_plots import write_varhyper_plots

        results["plots"] = [str(p) for p in write_varhyper_plots(results, run_dir)]
    from .curve import write_preset_html

    write_preset_html(run_dir, f"Variational hypernetwork family on {data.name}", md, cfg)
    return results
