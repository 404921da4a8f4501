"""Tune report: trials table (CSV/Markdown), best config, objective-vs-parameter plot."""

from __future__ import annotations

import csv
import io
import math
import os
from typing import Any, Mapping, Sequence

import numpy as np
import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from ...config import RunConfig, set_paths
from ...errors import TrainingError
from ...report.plots import new_figure, save_figure
from ...report.tables import markdown_table
from ...serialization import atomic_write_text, write_json
from .config import SCALARS, STAGES, ParamSpec, TuneConfig, encode_choice, was_interrupted, name_of, raw_base

__all__ = ["write_report", "format_trial"]


def trial_record(t: FrozenTrial, stage: str, params: Mapping[str, ParamSpec], fixed: Mapping[str, Any]) -> dict[str, Any]:
    values = {**fixed, **{k: params[k].decode(v) if k in params else v for k, v in t.params.items()}}
    error, interrupted = t.user_attrs.get("error"), was_interrupted(t)
    if interrupted:
        error = f"interrupted ({t.user_attrs.get('interrupted', 'process killed')}); retried"
    return {
        "stage": stage,
        "number": t.number,
        "state": t.state.name,
        "value": t.value,
        "params": {k: values[k] for k in params if k in values},
        "duration_s": round(t.duration.total_seconds(), 3) if t.duration is not None and not interrupted else None,
        "error": error,
        "interrupted": interrupted,
        "dir": t.user_attrs.get("dir"),
        "retry_of": t.user_attrs.get("retry_of"),
        "baseline": bool(t.user_attrs.get("baseline", False)),
    }


def format_trial(rec: Mapping[str, Any], metric: str) -> str:
    """One line for a finished trial: stage and number, state, value, params, seconds."""
    value = f"{metric} = {rec['value']:.4g}" if rec["value"] is not None else ""
    params = "  ".join(f"{k}={_fmt(v)}" for k, v in rec["params"].items())
    tail = f"  ({rec['duration_s']:.1f} s)" if rec["duration_s"] is not None else ""
    err = f"  {rec['error']}" if rec.get("error") else ""
    return f"{rec['stage']} #{rec['number']:<3d} {rec['state']:<8s} {value:<18s} {params}{tail}{err}"


def _fmt(v: Any, full: bool = False) -> str:
    if isinstance(v, float):
        return repr(v) if full else f"{v:.4g}"
    return str(v) if isinstance(v, SCALARS) else encode_choice(v)


# ---------------------------------------------------------------------- entry point
def best_record(records: Sequence[Mapping[str, Any]], direction: str) -> Mapping[str, Any] | None:
    """The best completed record; ties go to the earlier trial (coarse before refine)."""
    done = [r for r in records if r["state"] == "COMPLETE"]
    if not done:
        return None
    sign = -1.0 if direction == "maximize" else 1.0
    return min(done, key=lambda r: (sign * r["value"], r["stage"] != "coarse", r["number"]))


# ---------------------------------------------------------------------- report


def write_report(cfg: TuneConfig, out: str, stages: Sequence[tuple[str, optuna.Study, Mapping[str, Any]]]) -> dict[str, Any]:
    """Write trials.csv, trials.md, best.yaml, best.json and objective_vs_params.png; returns the summary."""
    search = cfg.search
    records = [trial_record(t, stage, search.params, fixed) for stage, study, fixed in stages
               for t in study.get_trials(deepcopy=False) if t.state != TrialState.WAITING]
    best = best_record(records, search.direction)
    names = list(search.params)
    header = ["stage", "number", "state", search.metric, "duration_s", *names, "error"]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for r in records:
        writer.writerow([r["stage"], r["number"], r["state"], "" if r["value"] is None else r["value"],
                         "" if r["duration_s"] is None else r["duration_s"],
                         *[_fmt(r["params"][k], full=True) if k in r["params"] else "" for k in names], r["error"] or ""])
    atomic_write_text(os.path.join(out, "trials.csv"), buf.getvalue())
    _write_markdown(cfg, out, records, best)
    _plot(cfg, out, records, best)
    if best is None:
        raise TrainingError(f"no trial completed ({len(records)} failed or were pruned); see {out}/trials.md")
    raw, full = raw_base(cfg.base)
    best_cfg = RunConfig(**set_paths(raw, best["params"], full))
    resolved = best_cfg.model_dump(mode="json", exclude_none=True, fallback=name_of)
    config_path = os.path.join(out, "best.yaml")
    atomic_write_text(config_path, yaml.safe_dump(resolved, sort_keys=False))
    summary = {
        "metric": search.metric,
        "direction": search.direction,
        "value": best["value"],
        "params": best["params"],
        "number": best["number"],
        "stage": best["stage"],
        "dir": best["dir"],
        "config_path": config_path,
        "counts": {s: _counts([r for r in records if r["stage"] == s]) for s, _, _ in stages},
        "baseline_value": next((r["value"] for r in records if r["baseline"] and r["value"] is not None), None),
    }
    write_json(os.path.join(out, "best.json"), summary)
    return {**summary, "config": resolved, "out": out, "trials": records}


def _counts(records: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Trials per outcome; an interrupted trial (retried under a new number) is not a failure."""
    states = ["INTERRUPTED" if r["interrupted"] else r["state"] for r in records]
    return {s: states.count(s) for s in ("COMPLETE", "PRUNED", "FAIL", "INTERRUPTED")}


def _write_markdown(cfg: TuneConfig, out: str, records: list[dict[str, Any]], best: Mapping[str, Any] | None) -> None:
    search = cfg.search
    names = list(search.params)
    lines = [f"# Hyperparameter search `{cfg.name}`", "",
             f"{search.metric} ({search.direction}) on the validation split; sampler {search.sampler}, "
             f"pruning {'on' if search.prune.enabled else 'off'}.", ""]
    for stage in STAGES:
        rs = [r for r in records if r["stage"] == stage]
        if rs:
            counts = ", ".join(f"{n} {state.lower()}" for state, n in _counts(rs).items())
            lines.append(f"- {stage}: {len(rs)} trials ({counts})")
    if best is not None:
        params = ", ".join(f"{k} = {_fmt(v)}" for k, v in best["params"].items())
        lines += ["", f"**Best**: {best['stage']} trial {best['number']}, {search.metric} = {best['value']:.4f} ({params}); "
                  f"config in `best.yaml` (`ensemblekit train {out}/best.yaml`)."]
    base = next((r for r in records if r["baseline"] and r["value"] is not None), None)
    if base is not None and best is not None:
        lines += ["", f"**Baseline** (the base config's own values, trial {base['number']}): {search.metric} = {base['value']:.4f}; "
                  f"the search changed it by {best['value'] - base['value']:+.4f}."]
    body = [[r["stage"], str(r["number"]) + (" (baseline)" if r["baseline"] else ""), r["state"], "" if r["value"] is None else f"{r['value']:.4f}",
             *[_fmt(r["params"][k]) if k in r["params"] else "" for k in names],
             "" if r["duration_s"] is None else f"{r['duration_s']:.1f}", (r["error"] or "").replace("|", "\\|")]
            for r in records]
    lines += ["", markdown_table(["stage", "number", "state", search.metric, *names, "duration s", "error"], body), ""]
    atomic_write_text(os.path.join(out, "trials.md"), "\n".join(lines))


def _plot(cfg: TuneConfig, out: str, records: list[dict[str, Any]], best: Mapping[str, Any] | None) -> None:
    """One panel per parameter: objective against its value, completed trials only, best starred."""
    params = cfg.search.params
    done = [r for r in records if r["state"] == "COMPLETE"]
    ncols = min(3, len(params))
    nrows = math.ceil(len(params) / ncols)
    fig = new_figure((3.4 * ncols, 2.8 * nrows))
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax, (name, spec) in zip(axes, params.items()):
        def x_of(r: Mapping[str, Any]) -> float:
            v = r["params"][name]
            return float([encode_choice(c) for c in spec.choices or []].index(encode_choice(v))) if spec.type == "categorical" else float(v)

        for i, stage in enumerate(STAGES):
            rs = [r for r in done if r["stage"] == stage and name in r["params"]]
            if rs:
                ax.scatter([x_of(r) for r in rs], [r["value"] for r in rs], s=18, alpha=0.75, color=f"C{i}",
                           marker="o" if stage == "coarse" else "^", label=stage)
        if best is not None and name in best["params"]:
            ax.scatter([x_of(best)], [best["value"]], s=140, marker="*", color="C3", edgecolor="black", linewidth=0.5, zorder=3, label="best")
        if spec.type == "categorical":
            ax.set_xticks(range(len(spec.choices or [])), [_fmt(c) for c in spec.choices or []])
            ax.set_xlim(-0.5, len(spec.choices or []) - 0.5)
        elif spec.log:
            ax.set_xscale("log")
        ax.set_xlabel(name)
        ax.set_ylabel(cfg.search.metric)
        ax.grid(True, alpha=0.3)
        if not done:
            ax.text(0.5, 0.5, "no completed trials", transform=ax.transAxes, ha="center", va="center")
    for ax in axes[len(params):]:
        ax.set_visible(False)
    if done:
        axes[0].legend(fontsize="small")
    fig.suptitle(f"{cfg.name}: {cfg.search.metric} vs parameters ({len(done)} completed trials)")
    save_figure(fig, os.path.join(out, "objective_vs_params.png"))
