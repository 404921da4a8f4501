"""``ensemblekit curve``: endpoints, curves between them, evaluation along t, curve ensembles, report.

One run directory holds ``endpoints/`` (an ``independent`` run of ``max(2, members)``
networks; members 0 and 1 are the endpoints, all of them the size-matched baseline),
one sub-directory per parametrisation (a ``curve_ensemble`` run from those endpoints),
``curve.json`` / ``curve.md`` (metrics along t and their summary) and the plots. Every
stage checkpoints; running the same command again resumes. METHODS.md §4.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import yaml
from pydantic import Field

from ..config import DataConfig, ModelConfig
from ..curves import evaluate_curve, summarize, two_model_errors
from ..curves.model import CurveModel
from ..curves.plane import plane_grid
from ..data.dataset import Data
from ..errors import ConfigError
from ..methods.base import create_method
from ..metrics.evaluate import evaluate
from ..report.curve_plots import curve_metrics_plot, plane_plot, two_model_plot
from ..report.tables import markdown_table
from ..serialization import atomic_write_text, write_json
from ..training.checkpoint import RunDir
from ..training.config import StrictModel, TrainConfig

__all__ = ["CurveConfig", "run_curve", "write_curve_report"]


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


def write_curve_report(curves: Mapping[str, CurveModel], data: Data, out_dir: str, grid: int = 61, plane: int = 0,
                       references: Mapping[str, float] | None = None) -> dict[str, Any]:
    """Evaluate the straight line and each curve on a t grid; write ``curve.json``, ``curve.md`` and the plots.

    Returns:
        ``{label: summary}`` (see :func:`~ensemblekit.curves.summarize`), ``line`` included.
    """
    from ..curves import t_grid

    ts = t_grid(grid)
    first = next(iter(curves.values()))
    evals = {"line": evaluate_curve(first.line(), data, ts), **{k: evaluate_curve(c, data, ts) for k, c in curves.items()}}
    yte = data.test.tensors()[1]  # type: ignore[union-attr]
    pairs = {k: two_model_errors(ev, yte) for k, ev in evals.items()}
    summary = {k: summarize(ev) for k, ev in evals.items()}
    for k in evals:
        summary[k]["pair_error_min"] = float(pairs[k].min())
    os.makedirs(out_dir, exist_ok=True)
    grid_rows = {k: [{**row, "pair_error": float(p)} for row, p in zip(ev.table(), pairs[k])] for k, ev in evals.items()}
    write_json(os.path.join(out_dir, "curve.json"), {"summary": summary, "grid": grid_rows})
    atomic_write_text(os.path.join(out_dir, "curve.md"), summary_markdown(summary))
    curve_metrics_plot(evals, os.path.join(out_dir, "curve_metrics.png"), title="train loss and test error along t")
    refs = {"w0 alone": float(evals["line"].test_error[0]), **dict(references or {})}
    two_model_plot({k: (ev.ts, pairs[k]) for k, ev in evals.items()}, os.path.join(out_dir, "curve_two_model.png"), references=refs)
    if plane:
        for k, c in curves.items():
            pg = plane_grid(c, data, size=plane)
            plane_plot(pg["xs"], pg["ys"], pg["errors"], pg["marks"], os.path.join(out_dir, f"plane_{k}.png"), curve_xy=pg["curve_xy"],
                       title=f"test error (%) in the plane of w0, w1 and the {k} bend")
    return summary


def summary_markdown(summary: Mapping[str, Mapping[str, float]]) -> str:
    header = ["path", "train loss min/max/mean/int", "test err % min/max/mean/int", "barrier (pts)", "t=0.5 train loss", "t=0.5 test err %"]
    body = [[k, "/".join(f"{s[f'train_loss_{q}']:.4f}" for q in ("min", "max", "mean", "int")),
             "/".join(f"{s[f'test_error_{q}']:.2f}" for q in ("min", "max", "mean", "int")),
             f"{s['barrier']:.2f}", f"{s['mid_train_loss']:.4f}", f"{s['mid_test_error']:.2f}"] for k, s in summary.items()]
    return markdown_table(header, body)


def run_curve(cfg: CurveConfig, run_dir: str, data: Data | None = None) -> dict[str, Any]:
    """Train (or load) the endpoints, fit every curve, evaluate, write the report; resumable.

    Returns:
        ``{"summary": {label: ...}, "ensembles": {label: test error %}, "cost_s": {...}}``.

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
    cost: dict[str, float] = {}
    paths = cfg.endpoints
    if paths is None:
        ind = create_method("independent", model=model, seed=cfg.seed, train=train, members=cfg.members)
        ind.fit(data, run_dir=rd.file("endpoints"))
        path = rd.file("endpoints", "ensemble.safetensors")
        ind.ensemble_.save(path)
        paths = [path]
        ensembles[f"independent ({cfg.members})"] = evaluate(ind.ensemble_, data.test)["error"]  # type: ignore[arg-type]
        ensembles["independent pair {w0, w1}"] = evaluate(ind.ensemble_.subset([0, 1]), data.test)["error"]  # type: ignore[arg-type]
        cost["endpoints"] = ind.train_seconds_
    curves: dict[str, CurveModel] = {}
    for kind in cfg.curves:
        m = create_method("curve_ensemble", model=model, seed=cfg.seed, train=train, members=cfg.members, curve=kind, num_bends=cfg.num_bends,
                          weight_decay=cfg.weight_decay, curve_epochs=cfg.curve_epochs, endpoints=paths)
        m.fit(data, run_dir=rd.file(kind))
        curves[kind] = m.curve_
        ensembles[f"{kind} curve ({cfg.members} points)"] = evaluate(m.ensemble_, data.test)["error"]  # type: ignore[arg-type]
        cost[kind] = m.train_seconds_
    refs = {k: v for k, v in ensembles.items() if k.startswith("independent pair")}
    summary = write_curve_report(curves, data, run_dir, grid=cfg.grid, plane=cfg.plane, references=refs)
    results = {"summary": summary, "ensembles": ensembles, "cost_s": {k: round(v, 3) for k, v in cost.items()}}
    write_json(rd.file("results.json"), results)
    atomic_write_text(rd.file("curve.md"), summary_markdown(summary) + "\n\n" + markdown_table(
        ["ensemble", "test error %"], [[k, f"{v:.2f}"] for k, v in ensembles.items()]) + "\n")
    return results
