"""``ensemblekit varhyper CONFIG.yaml``: a variational hypernetwork family vs per-lambda baselines (docs/methods.md, varhyper)."""

from __future__ import annotations

from typing import Any, List, Optional

import typer

from .app import AcceptCodeOpt, RunDirOpt, SetOpt, app, console, open_experiment, table, with_backend_options


@app.command()
@with_backend_options
def varhyper(
    config: str = typer.Argument(..., help="YAML config (see configs/varhyper_digits.yaml)."),
    set_: Optional[List[str]] = SetOpt,
    run_dir: Optional[str] = RunDirOpt,
    force: bool = typer.Option(False, "--force", help="Retrain the units of the run directory trained under another config or code (default: refuse)."),
    accept_code_change: bool = AcceptCodeOpt,
    backend_for: Any = None,
) -> None:
    """Train hypernetworks over lambda and separate variational / L2 nets per lambda; prune; tables and plots."""
    from ..experiments.varhyper import VarHyperConfig, run_varhyper

    cfg, target, data = open_experiment(config, set_, VarHyperConfig, run_dir)
    results = run_varhyper(cfg, target, data=data, backend=backend_for(cfg.backend), force=force, accept_code_change=accept_code_change)
    shown = [j for j, f in enumerate(cfg.fractions) if round(f, 2) in (0.0, 0.8)] or [0]
    rows = []
    for kind, s in results["summary"].items():
        for i, lam in enumerate(cfg.lambdas):
            rows.append([kind, f"{lam:g}", *[f"{100 * s['acc_mean'][i][j]:.1f}" for j in shown], f"{s['train_s'][0]:.0f}" if i == 0 else ""])
    console.print(table(f"test accuracy % on {data.name} (mean of {len(cfg.seeds)} seeds)", ["model", "lambda", *[f"{cfg.fractions[j]:.0%} pruned" for j in shown], "train s"], rows))
    for line in results["failed"]:
        console.print(f"[red]failed[/red] {line}")
    console.print(f"table {target}/varhyper.md, plots {target}/varhyper_pruning.png, varhyper_lambda.png, varhyper_kl.png")
