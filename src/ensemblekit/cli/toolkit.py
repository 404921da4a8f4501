"""Training-toolkit commands: schedule, doctor, tune."""

from __future__ import annotations

from typing import Any, List, Optional

import typer

from .app import SetOpt, app, console, table as _table, with_backend_options


@app.command()
def schedule(
    config: str = typer.Argument(..., help="A train config (YAML)."),
    set_: Optional[List[str]] = SetOpt,
    out: str = typer.Option("schedule.png", "--out", help="PNG to write."),
) -> None:
    """Draw the learning-rate policy of a train config (lr vs iteration, collection points marked)."""
    from ..config import RunConfig, load_config
    from ..experiments.schedule_plot import plot_schedule

    cfg = load_config(config, RunConfig, set_ or [])
    summary = plot_schedule(cfg, cfg.data.load(), out)
    console.print(f"wrote {out}: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.items()))


@app.command()
def doctor(
    config: str = typer.Argument(..., help="A train config (YAML)."),
    set_: Optional[List[str]] = SetOpt,
    out: str = typer.Option("lr_range.png", "--out", help="PNG of the learning-rate range test."),
) -> None:
    """Sanity checks before a long run: initial loss ~ log(C), overfit 2 batches, learning-rate range test."""
    from ..config import RunConfig, load_config
    from ..experiments.doctor import run_doctor

    cfg = load_config(config, RunConfig, set_ or [])
    checks = run_doctor(cfg, cfg.data.load(), out)
    for c in checks:
        mark = "[green]PASS[/green]" if c.passed else "[red]FAIL[/red]"
        console.print(f"{mark}  {c.name}: {c.detail}", highlight=False)
    console.print(f"learning-rate range plot: {out}")
    if not all(c.passed for c in checks):
        raise typer.Exit(1)


# --- tune: hyperparameter search (experiments/tune.py) -------------------------------------
@app.command("tune")
@with_backend_options
def tune_cmd(
    config: str = typer.Argument(..., help="YAML config with base (a train config), search and out."),
    set_: Optional[List[str]] = SetOpt,
    out: Optional[str] = typer.Option(None, "--out", help="Output directory (default: the config's `out`)."),
    backend_for: Any = None,
) -> None:
    """Hyperparameter search (optuna): TPE, random or grid, pruning, coarse-to-fine.

    With --backend ray every trial is a Ray task sharing <out>/study.db (a folder every node sees).

    Writes study.db, trials/<n>, trials.csv, trials.md, best.yaml, best.json and
    objective_vs_params.png; re-running the same command continues a killed search.
    """
    from rich.markup import escape

    from ..schema import apply_overrides, load_yaml, parse_config
    from ..experiments.tune import TuneConfig, format_trial, run_tune

    cfg = parse_config(apply_overrides(load_yaml(config), set_ or []), TuneConfig)
    runner = backend_for()
    out_dir = out or cfg.out
    s = cfg.search
    refine = f", then {s.refine.trials} refine trials" if s.refine else ""
    console.print(f"searching {len(s.params)} parameter(s): {s.stage_trials} {s.sampler} trials{refine}, "
                  f"{s.metric} on the validation split -> [bold]{out_dir}[/bold]")
    res = run_tune(cfg, out_dir, progress=lambda rec: console.print(format_trial(rec, s.metric), markup=False, highlight=False, soft_wrap=True),
                   backend=runner)
    rows = [[r["stage"], r["number"], "INTERRUPTED" if r["interrupted"] else r["state"], "" if r["value"] is None else f"{r['value']:.4f}",
             escape(", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r["params"].items())),
             "" if r["duration_s"] is None else f"{r['duration_s']:.1f}"] for r in res["trials"]]
    console.print(_table(f"{cfg.name}: {len(rows)} trials", ["stage", "#", "state", s.metric, "params", "s"], rows))
    console.print(f"best: {res['stage']} trial {res['number']}, {s.metric} = {res['value']:.4f}; "
                  f"config in [bold]{res['config_path']}[/bold] (train it with: ensemblekit train {res['config_path']})")
