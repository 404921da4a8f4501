"""``ensemblekit nes CONFIG.yaml``: EdgeNES and its baselines (docs/methods.md, edgenes)."""

from __future__ import annotations

from typing import Any, List, Optional

import typer

from .app import AcceptCodeOpt, RunDirOpt, SetOpt, app, console, open_experiment, table, with_backend_options


@app.command()
@with_backend_options
def nes(
    config: str = typer.Argument(..., help="YAML config (see configs/nes_mnist1d.yaml)."),
    set_: Optional[List[str]] = SetOpt,
    run_dir: Optional[str] = RunDirOpt,
    force: bool = typer.Option(False, "--force", help="Retrain the units of the run directory trained under another config or code (default: refuse)."),
    accept_code_change: bool = AcceptCodeOpt,
    backend_for: Any = None,
) -> None:
    """DARTS search, hypernetwork, pool sampling and retraining, ensemble selection; EdgeNES vs NES-RS, DARTS ensembles and the other baselines."""
    from ..experiments.nes import NesConfig, run_nes
    from ..report.nes_plots import LABELS

    cfg, target, data = open_experiment(config, set_, NesConfig, run_dir)
    out = run_nes(cfg, target, data=data, backend=backend_for(cfg.backend), force=force, accept_code_change=accept_code_change)
    rows = [[LABELS.get(m, m), f"{s['acc_mean']:.2f} ± {s['acc_std']:.2f}", f"{100 - s['acc_mean']:.2f}", f"{s['find_s']:.0f}", f"{s['retrain_s']:.0f}"]
            for m, s in out["summary"].items()]
    console.print(table(f"ensembles of {cfg.ensemble} from pools of {cfg.pool}, {data.name} test split, {len(cfg.seeds)} seed(s)",
                        ["method", "acc %", "error %", "find s", "retrain s"], rows))
    for r in out["runs"]:
        if "spearman" in r:
            console.print(f"seed {r['seed']}: Spearman(lambda, common edges with alpha*) = {r['spearman']:.3f}")
    console.print(f"table in {target}/nes.md, plots {target}/nes_common_edges.png, {target}/nes_accuracy_cost.png")
