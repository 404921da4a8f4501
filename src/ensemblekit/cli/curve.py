"""``ensemblekit curve CONFIG.yaml``: mode-connecting curves between two networks (METHODS.md §4)."""

from __future__ import annotations

import os
from typing import List, Optional

import typer

from .app import SetOpt, app, console, table


@app.command()
def curve(
    config: str = typer.Argument(..., help="YAML config (see configs/curve_mnist1d.yaml)."),
    set_: Optional[List[str]] = SetOpt,
    run_dir: Optional[str] = typer.Option(None, "--run-dir", help="Where to write the run (default: <out>/<config name>-s<seed>); the same command resumes it."),
) -> None:
    """Train (or load) two endpoints, fit Bezier / polychain curves between them, evaluate along t, write tables and plots."""
    from ..config import apply_overrides, load_yaml, parse_config
    from ..experiments.curve import CurveConfig, run_curve

    cfg = parse_config(apply_overrides(load_yaml(config), set_ or []), CurveConfig)
    target = run_dir or os.path.join(cfg.out, f"{os.path.splitext(os.path.basename(config))[0]}-s{cfg.seed}")
    data = cfg.data.load()
    console.print(f"run directory: [bold]{target}[/bold]  (run the same command again to resume)")
    results = run_curve(cfg, target, data=data)
    rows = [[k, f"{s['test_error_min']:.2f}", f"{s['test_error_max']:.2f}", f"{s['barrier']:.2f}", f"{s['mid_train_loss']:.4f}", f"{s['mid_test_error']:.2f}"]
            for k, s in results["summary"].items()]
    console.print(table(f"along t ({cfg.grid} points), test split of {data.name}", ["path", "min err %", "max err %", "barrier", "t=.5 train loss", "t=.5 err %"], rows))
    console.print(table("ensembles", ["ensemble", "test error %"], [[k, f"{v:.2f}"] for k, v in results["ensembles"].items()]))
    console.print(f"tables in {target}/curve.md, plots {target}/curve_metrics.png, {target}/curve_two_model.png")
