"""``ensemblekit curve``: endpoints, curves between them, evaluation along t, curve ensembles, report.

A preset over two registered methods, recorded through the one results path. One run
directory holds ``endpoints/`` (an ``independent`` run of ``max(2, members)`` networks;
members 0 and 1 are the endpoints, all of them the size-matched baseline), one
sub-directory per parametrisation (a ``curve_ensemble`` run from those endpoints), each
with its ``results.json`` row, ``curve.json`` / ``curve.md`` (metrics along t and their
summary), ``curves.json`` (the ensembles' errors and every row) and the plots. Every stage
checkpoints; running the same command again resumes. Background: ``docs/methods.md``
(mode-connecting curves).
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import yaml
from pydantic import Field

from ..config import DataConfig, ModelConfig
from ..curves.model import CurveModel
from ..data.dataset import Data
from ..errors import ConfigError
from ..methods.base import create_method
from ..evaluation.evaluate import evaluate
from ..report.curve_report import summary_markdown, write_curve_report
from ..report.tables import markdown_table
from ..serialization import atomic_write_text, write_json
from ..training.checkpoint import RunDir
from ..schema import StrictModel
from ..training.config import TrainConfig
from .results import record_result

__all__ = ["CurveConfig", "run_curve"]


class CurveConfig(StrictModel):
    """``ensemblekit curve`` settings.

    Attributes:
        data, model, train: as in ``train`` (``train`` drives both the endpoints and the curves).
        curves: parametrisations to fit between the same endpoints (default bezier, polychain).
        num_bends: bends including the endpoints (>= 3; default 3).
        weight_decay: decay on ``phi(t)`` (default: taken from the optimizer / train config).
        curve_epochs: epochs of each curve (default ``train.epochs``).
        members: size of the curve ensembles and of the independent baseline (>= 2; default 3).
        endpoints: saved ensemble files to use instead of training endpoints (then there is no
            independent baseline beyond the two endpoints' pair).
        grid: points of the t grid (>= 2; default 61). plane: side of the plane grid (0 = off).
    """

    data: DataConfig = Field(default_factory=lambda: DataConfig(name="mnist1d"))
    model: ModelConfig = Field(default_factory=lambda: ModelConfig(name="cnn1d"))
    train: TrainConfig = Field(default_factory=TrainConfig)
    curves: list[str] = Field(default_factory=lambda: ["bezier", "polychain"], min_length=1)
    num_bends: int = Field(3, ge=3)
    weight_decay: float | None = Field(None, ge=0)
    curve_epochs: int | None = Field(None, ge=1)
    members: int = Field(3, ge=2)
    endpoints: list[str] | None = None
    grid: int = Field(61, ge=2)
    plane: int = Field(0, ge=0)
    seed: int = 0
    out: str = "runs/curve"


def run_curve(cfg: CurveConfig, run_dir: str, data: Data | None = None) -> dict[str, Any]:
    """Train (or load) the endpoints, fit every curve, evaluate, write the report; resumable.

    The endpoints are an ``independent`` run and each curve a ``curve_ensemble`` run, both
    recorded through the one results path (``endpoints/results.json``, ``<curve>/results.json``).

    Returns:
        ``{"summary": {label: ...}, "ensembles": {label: test error %}, "cost_s": {...}, "rows": {run: row}}``.

    Raises:
        ConfigError: ``run_dir`` already holds a run with a different config.
    """
    rd = RunDir(run_dir)
    resolved = yaml.safe_dump(cfg.model_dump(mode="json", exclude_none=True), sort_keys=False)
    if os.path.exists(rd.file("config.yaml")):
        with open(rd.file("config.yaml"), encoding="utf-8") as fh:
            if yaml.safe_load(fh) != yaml.safe_load(resolved):
                raise ConfigError(f"{run_dir} holds a curve run with another config; choose another --run-dir (or delete it)")
    else:
        atomic_write_text(rd.file("config.yaml"), resolved)
    data = data if data is not None else cfg.data.load()
    model, train = cfg.model.spec(), cfg.train.model_dump()
    ensembles: dict[str, float] = {}
    rows: dict[str, dict[str, Any]] = {}
    paths = cfg.endpoints
    if paths is None:
        ind = create_method("independent", model=model, seed=cfg.seed, train=train, members=cfg.members)
        ind.fit(data, run_dir=rd.file("endpoints"))
        rows["endpoints"] = record_result(ind, data, rd.file("endpoints"), label=f"independent ({cfg.members})", plots=False, report=False)
        paths = [rd.file("endpoints", "ensemble.safetensors")]
        ensembles[f"independent ({cfg.members})"] = rows["endpoints"]["test"]["error"]
        ensembles["independent pair {w0, w1}"] = evaluate(ind.ensemble_.subset([0, 1]), data.test)["error"]  # type: ignore[arg-type]
    curves: dict[str, CurveModel] = {}
    for kind in cfg.curves:
        m = create_method("curve_ensemble", model=model, seed=cfg.seed, train=train, members=cfg.members, curve=kind, num_bends=cfg.num_bends,
                          weight_decay=cfg.weight_decay, curve_epochs=cfg.curve_epochs, endpoints=paths)
        m.fit(data, run_dir=rd.file(kind))
        rows[kind] = record_result(m, data, rd.file(kind), label=f"{kind} curve ({cfg.members} points)", plots=False, report=False)
        curves[kind] = m.curve_
        ensembles[f"{kind} curve ({cfg.members} points)"] = rows[kind]["test"]["error"]
    refs = {k: v for k, v in ensembles.items() if k.startswith("independent pair")}
    summary = write_curve_report(curves, data, run_dir, grid=cfg.grid, plane=cfg.plane, references=refs)
    cost = {k: r["wall_s"] for k, r in rows.items()}
    results = {"summary": summary, "ensembles": ensembles, "cost_s": {k: round(v, 3) for k, v in cost.items()}, "rows": rows}
    write_json(rd.file("curves.json"), results)
    md = summary_markdown(summary) + "\n\n" + markdown_table(["ensemble", "test error %"], [[k, f"{v:.2f}"] for k, v in ensembles.items()]) + "\n"
    atomic_write_text(rd.file("curve.md"), md)
    write_preset_html(run_dir, f"Mode-connecting curves on {data.name}", md, cfg)
    return results


def write_preset_html(run_dir: str, title: str, md: str, cfg: Any) -> None:
    from ..report.html import write_html_report
    from .provenance import code_version

    write_html_report(run_dir, title, md, cfg.model_dump(mode="json", exclude_none=True) if hasattr(cfg, "model_dump") else None, code_version())
