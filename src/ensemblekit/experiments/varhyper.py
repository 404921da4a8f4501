"""``ensemblekit varhyper``: hypernetwork forms vs separate variational and L2 nets per lambda.

Units of work (one per seed and kind: ``hyper_<form>``, ``separate``, ``l2``) are pure
functions of a JSON-able spec run through an execution backend; each writes its
checkpoints under ``<run>/<kind>-s<seed>/`` (the same command resumes) and returns test
accuracy ``(lambda x pruned share)``, KL per lambda and its training seconds.
``varhyper.json`` / ``varhyper.md`` hold the mean ± std over seeds; plots are written by
:mod:`ensemblekit.report.varhyper_plots`. METHODS.md §7.
"""

from __future__ import annotations

import os
from typing import Any, Literal, Mapping

import numpy as np
import yaml
from pydantic import Field

from ..config import DataConfig, ModelConfig
from ..data.dataset import Data
from ..models.registry import model_factory
from ..report.tables import markdown_table, mean_std
from ..serialization import atomic_write_text, write_json
from ..training.checkpoint import RunDir
from ..training.config import TrainConfig
from ..varhyper.family import family_kl, pruning_curve, train_hyper, train_l2, train_separate
from ..varhyper.settings import FamilySettings
from ..varhyper.prune import DEFAULT_FRACTIONS
from .backends import Backend, get_backend

__all__ = ["VarHyperConfig", "run_varhyper", "varhyper_unit"]


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


def varhyper_unit(spec: Mapping[str, Any], data: Data) -> dict[str, Any]:
    """Train one kind for one seed (resuming from ``spec['dir']``) and evaluate it."""
    cfg = VarHyperConfig(**spec["config"])
    factory = model_factory(cfg.model.spec(), input_shape=data.input_shape, num_classes=data.num_classes)
    run, kind, seed = RunDir(spec["dir"]), spec["kind"], int(spec["seed"])
    hyper = cfg.hyper_kwargs()
    if kind.startswith("hyper_"):
        model, info = train_hyper(factory, data, cfg.train, form=kind[len("hyper_"):], seed=seed, run=run, rank=cfg.rank,
                                  hidden=cfg.hidden, pivots=cfg.pivots, eval_lambdas=cfg.lambdas, **hyper)
    elif kind == "separate":
        model, info = train_separate(factory, data, cfg.train, cfg.lambdas, seed=seed, run=run, **hyper)
    else:
        model, info = train_l2(factory, data, cfg.train, cfg.lambdas, seed=seed, run=run)
    acc = pruning_curve(model.eval(), cfg.lambdas, cfg.fractions, data.test)
    kl = family_kl(model, cfg.lambdas).tolist() if kind != "l2" else None
    return {"kind": kind, "seed": seed, "acc": acc.tolist(), "kl": kl, "train_s": info["train_s"]}


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


def run_varhyper(cfg: VarHyperConfig, run_dir: str, *, data: Data | None = None, plots: bool = True, backend: Backend | None = None) -> dict[str, Any]:
    """Train every form and baseline for every seed, evaluate, write ``varhyper.{json,md}`` and plots.

    ``backend``: an execution backend for the units (default: ``get_backend(cfg.backend)``)."""
    data = data if data is not None else cfg.data.load()
    os.makedirs(run_dir, exist_ok=True)
    resolved = cfg.model_dump(mode="json")
    atomic_write_text(os.path.join(run_dir, "config.yaml"), yaml.safe_dump(resolved, sort_keys=False))
    kinds = [f"hyper_{f}" for f in cfg.forms] + list(cfg.baselines)
    specs = [{"key": f"{k}-s{s}", "kind": k, "seed": s, "dir": os.path.join(run_dir, f"{k}-s{s}"), "config": resolved}
             for s in cfg.seeds for k in kinds]
    backend = backend if backend is not None else get_backend(cfg.backend)
    outcomes = backend.map(varhyper_unit, specs, context={"data": data})
    failed = [f"{o.key}: {o.error}" for o in outcomes if not o.ok]
    rows = [o.value for o in outcomes if o.ok and o.value is not None]
    summary = _summary(rows, cfg)
    results = {"data": data.name, "lambdas": cfg.lambdas, "fractions": cfg.fractions, "summary": summary, "rows": rows, "failed": failed}
    write_json(os.path.join(run_dir, "varhyper.json"), results)
    atomic_write_text(os.path.join(run_dir, "varhyper.md"), _markdown(summary, cfg, data.name))
    if plots and summary:
        from ..report.varhyper_plots import write_varhyper_plots

        results["plots"] = [str(p) for p in write_varhyper_plots(results, run_dir)]
    return results
