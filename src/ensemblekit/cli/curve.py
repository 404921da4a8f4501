"""``ensemblekit curve CONFIG.yaml``: mode-connecting curves between two networks (docs/methods.md, curve_ensemble)."""

from __future__ import annotations

from typing import List, Optional

import typer

from .app import RunDirOpt, SetOpt, app, console, open_experiment, table


@app.command()
def curve(
    config: str = typer.Argument(..., help="YAML config (see configs/curve_mnist1d.yaml)."),
    set_: Optional[List[str]] = SetOpt,
    run_dir: Optional[str] = RunDirOpt,
) -> None:
    """Train (or load) two endpoints, fit Bezier / polychain curves between them, evaluate along t, write tables and plots."""
    from ..experiments.curve import CurveConfig, run_curve

    cfg, target, data = open_experiment(config, set_, CurveConfig, run_dir, suffix=lambda c: f"-s{c.seed}")
    results = run_curve(cfg, target, data=data)
    rows = [[k, f"{s['test_error_min']:.2f}", f"{s['test_error_max']:.2f}", f"{s['barrier']:.2f}", f"{s['mid_train_loss']:.4f}", f"{s['mid_test_error']:.2f}"]
            for k, s in results["summary"].items()]
    console.print(table(f"along t ({cfg.grid} points), test split of {data.name}", ["path", "min err %", "max err %", "barrier", "t=.5 train loss", "t=.5 err %"], rows))
    console.print(table("ensembles", ["ensemble", "test error %"], [[k, f"{v:.2f}"] for k, v in results["ensembles"].items()]))
    console.print(f"tables in {target}/curve.md, plots {target}/curve_metrics.png, {target}/curve_two_model.png")
