"""``ensemblekit curve``: endpoints, curves between them, evaluation along t, curve ensembles, report.

A preset (:mod:`~ensemblekit.experiments.presets`) over two registered methods, in two
stages of cells trained by the same machinery as a ``compare`` cell: ``endpoints/`` (an
``independent`` run of ``members`` networks; members 0 and 1 are the endpoints, all of
them the size-matched baseline), then one cell per parametrisation (``<curve>/``: a
``curve_ensemble`` run from those endpoints), each with its ``results.json`` row. The
summary evaluates the straight line and every curve on the t grid (and the plane, when
asked) from the cells' trained curves: ``curve.json`` / ``curve.md`` (metrics along t and
their summary), ``curves.json`` (the ensembles' errors and every row) and the plots. The
cells keep their checkpoints (the summary rebuilds their trained models from them) and are
keyed by the grid they are evaluated on too, so a changed grid is refused like any other
change of the run directory's config. Running the same command again resumes. Paper:
Garipov et al., "Loss Surfaces, Mode Connectivity, and Fast Ensembling of DNNs" (NeurIPS
2018). Background: ``docs/methods.md`` (mode-connecting curves).
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

from pydantic import Field

from ..config import DataConfig, ModelConfig
from ..data.dataset import Data
from ..evaluation.evaluate import evaluate
from ..report.curve_report import summary_markdown, write_curve_report
from ..report.tables import markdown_table
from ..schema import StrictModel
from ..serialization import write_json
from ..training.config import TrainConfig
from .cells import cell_dir, cell_method
from .presets import Preset, Summary, TableSpec, preset_cell, run_preset

__all__ = ["CurveConfig", "PRESET", "curve_cells", "run_curve"]


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
        seed: the run seed. backend: execution backend of the curve cells (default local).
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
    backend: str = "local"
    out: str = "runs/curve"


_ENDPOINTS = "endpoints"  # the key and folder of the endpoints cell


def _independent(cfg: CurveConfig) -> str:
    return f"independent ({cfg.members})"


def _curve(cfg: CurveConfig, kind: str) -> str:
    return f"{kind} curve ({cfg.members} points)"


def curve_cells(cfg: CurveConfig, run_dir: str) -> list[list[dict[str, Any]]]:
    """The endpoints cell (unless ``endpoints`` names files), then one ``curve_ensemble`` cell per curve."""
    model, stages = cfg.model.spec(), []
    paths = cfg.endpoints
    if paths is None:
        stages.append([preset_cell(cfg, key=_ENDPOINTS, seed=cfg.seed, train=cfg.train, model=model,
                                   method={"name": "independent", "label": _independent(cfg), "members": cfg.members})])
        paths = [os.path.join(run_dir, _ENDPOINTS, "ensemble.safetensors")]
    curve = {"members": cfg.members, "num_bends": cfg.num_bends, "weight_decay": cfg.weight_decay, "curve_epochs": cfg.curve_epochs,
             "endpoints": paths}
    stages.append([preset_cell(cfg, key=kind, seed=cfg.seed, train=cfg.train, model=model, along_t={"grid": cfg.grid, "plane": cfg.plane},
                               method={"name": "curve_ensemble", "label": _curve(cfg, kind), "curve": kind, **curve})
                   for kind in cfg.curves])
    return stages


def _fitted(spec: Mapping[str, Any], data: Data, run_dir: str) -> Any:
    """A finished cell's method, rebuilt from its checkpoints (nothing is trained again)."""
    method, _ = cell_method(spec, data)
    return method.fit(data, run_dir=cell_dir(run_dir, spec), resume=True)


def _summary(cfg: CurveConfig, cells: Sequence[tuple[Mapping[str, Any], dict[str, Any]]], data: Data, run_dir: str,
             plots: bool) -> Summary:
    """Every curve (and the straight line) along t, the ensembles' test errors, ``curves.json`` and the table."""
    done = [(spec, row) for spec, row in cells if "failed" not in row]
    rows = {spec["key"]: {k: v for k, v in row.items() if k != "elapsed_s"} for spec, row in done}  # as in each results.json
    ensembles: dict[str, float] = {}
    curves = {}
    for spec, row in done:
        fitted = _fitted(spec, data, run_dir)
        ensembles[spec["label"]] = row["test"]["error"]
        if spec["key"] == _ENDPOINTS:  # members 0 and 1 are the curves' endpoints
            ensembles["independent pair {w0, w1}"] = evaluate(fitted.ensemble_.subset([0, 1]), data.test)["error"]  # type: ignore[arg-type]
        else:
            curves[spec["key"]] = fitted.curve_
    refs = {k: v for k, v in ensembles.items() if k.startswith("independent pair")}
    summary = write_curve_report(curves, data, run_dir, grid=cfg.grid, plane=cfg.plane, references=refs, plots=plots) if curves else {}
    cost = {k: r["wall_s"] for k, r in rows.items()}
    results = {"summary": summary, "ensembles": ensembles, "cost_s": {k: round(v, 3) for k, v in cost.items()}, "rows": rows}
    write_json(os.path.join(run_dir, "curves.json"), results)
    table = markdown_table(["ensemble", "test error %"], [[k, f"{v:.2f}"] for k, v in ensembles.items()])
    md = summary_markdown(summary) + "\n\n" + table + "\n"
    return Summary(results, md, "curve.md", f"Mode-connecting curves on {data.name}")


def _show(cfg: CurveConfig, results: Mapping[str, Any], data: Data, run_dir: str) -> list[Any]:
    rows = [[k, f"{s['test_error_min']:.2f}", f"{s['test_error_max']:.2f}", f"{s['barrier']:.2f}", f"{s['mid_train_loss']:.4f}",
             f"{s['mid_test_error']:.2f}"] for k, s in results["summary"].items()]
    return [TableSpec(f"along t ({cfg.grid} points), test split of {data.name}",
                      ["path", "min err %", "max err %", "barrier", "t=.5 train loss", "t=.5 err %"], rows),
            TableSpec("ensembles", ["ensemble", "test error %"], [[k, f"{v:.2f}"] for k, v in results["ensembles"].items()]),
            f"tables in {run_dir}/curve.md, plots {run_dir}/curve_metrics.png, {run_dir}/curve_two_model.png"]


PRESET = Preset("curve", CurveConfig, cells=curve_cells, summarize=_summary, show=_show, run_dir_suffix=lambda c: f"-s{c.seed}",
                cell_options={"report": False, "keep_checkpoints": True})


def run_curve(cfg: CurveConfig, run_dir: str, data: Data | None = None, backend: Any = None, force: bool = False,
              accept_code_change: bool = False) -> dict[str, Any]:
    """Train (or load) the endpoints, fit every curve, evaluate, write the report; resumable.

    The endpoints are an ``independent`` cell and each curve a ``curve_ensemble`` cell, both
    recorded through the one results path (``endpoints/results.json``, ``<curve>/results.json``).

    Returns:
        ``{"summary": {label: ...}, "ensembles": {label: test error %}, "cost_s": {...}, "rows": {run: row}}``.

    Raises:
        StaleResultError: ``run_dir`` holds cells of another config (or other code) and neither
            ``force`` nor ``accept_code_change`` is given.
    """
    return run_preset(PRESET, cfg, run_dir, data=data, backend=backend, force=force, accept_code_change=accept_code_change).results
