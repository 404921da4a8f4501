"""Comparisons of methods x budgets x seeds: the budget table of Garipov et al. (2018) for any
model, data and registered method.

Each *cell* (method, budget, seed) is an independent unit of work
(:mod:`~ensemblekit.experiments.cells`, the same unit as every preset's): a pure function of
its resolved spec that trains into its own folder (``cells/<label>-b<k>-s<seed>``) and
is recorded through the one results path (``results.json``, the row schema of
:mod:`ensemblekit.experiments.results`). Cells already done are skipped, so a killed
comparison continues where it stopped; a cell that fails is reported and the others
still run. Cells share ``<out>/cache``: intermediate results that are pure functions of
their spec (a DARTS search, a trained candidate architecture) are computed once.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import yaml

from .. import hashing
from ..config import CompareConfig, DataConfig, MethodConfig
from ..errors import ConfigError
from ..data.dataset import Data
from ..methods.base import METHODS
from ..report.plots import line_plot, size_curve_plot
from ..report.tables import comparison_markdown, grid, headline_metric, is_regression, mean_std
from ..serialization import atomic_write_text, write_json
from .backends import Backend
from .cells import cell_data, check_cells, compare_cell, refuse_stale, run_cell, run_cells, train_hash
from .provenance import code_note, code_version

__all__ = ["Comparison", "cell_specs", "cell_spec", "cell_key", "slug", "run_cell", "compare_cell", "train_hash", "run_compare", "write_report", "size_reference"]


@dataclass
class Comparison:
    """What :func:`run_compare` gives: every cell's row (in table order) and the report's Markdown."""

    rows: list[dict[str, Any]]
    markdown: str
    out: str
    failed: list[dict[str, Any]] = field(default_factory=list)


def slug(text: str) -> str:
    """A label as a folder name: runs of other characters than letters, digits, ``_.-`` become ``_``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "method"


def cell_key(label: str, budget: Any, seed: Any, split: Any = None) -> str:
    """The folder name of a comparison cell under ``cells/``: ``<label>-b<budget>-s<seed>[-k<split>]``."""
    return f"{slug(label)}-b{budget}-s{seed}" + ("" if split is None else f"-k{split}")


def cell_specs(cfg: CompareConfig, seeds: Sequence[int] | None = None) -> list[dict[str, Any]]:
    """The resolved, JSON-able spec of every cell, in table order (``seeds``: default the config's)."""
    splits = [None] if cfg.data.splits is None else list(range(cfg.data.splits))
    return [cell_spec(cfg, m, budget, seed, split)
            for m in cfg.methods for budget in cfg.budgets for split in splits for seed in (cfg.seed_list if seeds is None else seeds)]


def cell_spec(cfg: CompareConfig, method: MethodConfig, budget: int, seed: int, split: int | None = None, *,
              evaluation: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The spec of one cell: ``method`` at ``budget`` and ``seed`` (on random split ``split``) under
    ``cfg``'s data, model and training (``evaluation``: default the config's)."""
    spec: dict[str, Any] = {
        "data": cfg.data.model_dump(mode="json", exclude_none=True),
        "train": cfg.train.model_dump(mode="json", exclude_unset=True),
        "evaluation": dict(evaluation) if evaluation is not None else cfg.evaluation.model_dump(mode="json"),
    }
    if cfg.evaluation.held_out_classes is not None:  # they change the training data: part of what every cell trains on
        spec["held_out_classes"] = cfg.evaluation.held_out_classes
    key = cell_key(method.display, budget, seed, split)
    spec.update({"model": method.model_spec(cfg.model), "method": method.model_dump(mode="json", exclude_none=True),
                 "label": method.display, "budget": budget, "seed": seed, "key": key})
    if split is not None:  # the k-th random train/test split: part of what the cell trains on
        spec["data"] = {**{k: v for k, v in spec["data"].items() if k != "splits"}, "split": split}
        spec["split"] = split
    if cfg.budget_unit == "flops":  # the single model whose FLOPs a budget counts
        spec["budget_unit"], spec["budget_model"] = "flops", cfg.model.spec()
    return spec


def run_compare(
    cfg: CompareConfig,
    out_dir: str,
    *,
    data: Data | None = None,
    on_done: Callable[[Mapping[str, Any], dict[str, Any]], None] | None = None,
    backend: Backend | None = None,
    force: bool = False,
    accept_code_change: bool = False,
    on_trial: Callable[[dict[str, Any]], None] | None = None,
) -> Comparison:
    """Run every cell (skipping finished ones), then write ``results.json``, ``results.md`` and plots.

    Cells run on ``backend`` (default: one after another in this process). Before anything
    runs, every cell folder that holds work of another spec (a changed config into the same
    ``out_dir``) or computed by other code (an upgrade, a new torch) makes the call refuse,
    unless ``force`` (those cells are retrained) or, for a code change only,
    ``accept_code_change`` (their rows are kept, the acceptance recorded, and ``results.md``
    names the rows other code computed). A cell
    that another process is training is waited for and its row taken, so two commands on one
    ``out_dir`` share the cells instead of training them twice.

    With ``tuning:`` every tuned method first gets the same number of trials
    (:mod:`~ensemblekit.experiments.tune.compare_tuning`; ``on_trial(record)`` after each), then
    its best setting is trained for every budget and seed. With ``seeds: {auto: ...}`` seeds are
    added until the two best methods differ with confidence (:mod:`~ensemblekit.experiments.seeds`).

    Returns:
        A :class:`Comparison`: the rows (failed cells carry ``failed`` with the error instead
        of metrics) and the Markdown report the CLI prints.

    Raises:
        StaleResultError: a cell of ``out_dir`` belongs to another config (and ``force`` is off).
    """
    specs = cell_specs(cfg)
    data = _check(cfg, specs, out_dir, data, force=force, accept_code_change=accept_code_change)
    tuning: list[dict[str, Any]] = []
    if cfg.tuning is not None:
        from ..config.tuning import tuned_labels
        from .tune.compare_tuning import trial_spec

        trials = [trial_spec(cfg, m, {}) for m in cfg.methods if m.display in tuned_labels(cfg)]
        check_cells(trials, data if data is not None else cell_data(trials[0]))  # with data.splits: the first split's
    os.makedirs(out_dir, exist_ok=True)
    atomic_write_text(os.path.join(out_dir, "config.yaml"), yaml.safe_dump(cfg.model_dump(mode="json", exclude_none=True), sort_keys=False))
    if cfg.tuning is not None:
        from .tune.compare_tuning import run_tuning

        methods, tuning = run_tuning(cfg, out_dir, data, force=force, accept_code_change=accept_code_change, on_trial=on_trial)
        cfg = cfg.model_copy(update={"methods": methods})
        specs = cell_specs(cfg)
        _check(cfg, specs, out_dir, data, force=force, accept_code_change=accept_code_change)
    options = {"backend": backend, "on_done": on_done, "force": force, "accept_code_change": accept_code_change}
    rows = run_cells(specs, out_dir, data, **options)  # type: ignore[arg-type]
    decision = None
    if cfg.auto_seeds is not None:
        from .seeds import more_seeds

        rows, decision = more_seeds(cfg, rows, lambda seeds: _run_more(cfg, seeds, out_dir, data, options))
    md = write_report(cfg, rows, out_dir, tuning=tuning, seeds=decision)
    return Comparison(rows, md, out_dir, [r for r in rows if "failed" in r])


def _check(cfg: CompareConfig, specs: Sequence[Mapping[str, Any]], out_dir: str, data: Data | None, *, force: bool,
           accept_code_change: bool) -> Data | None:
    """Check every cell against its data and refuse stale cell folders, before anything is written;
    returns the data the cells share (None with ``data.splits``: each cell loads its own split)."""
    from ..evaluation.run import prepare_data

    if cfg.data.splits is not None:  # each cell trains on its own split: checked per split, loaded by the cell
        if data is not None:
            raise ConfigError("data.splits re-splits a dataset the config loads; give no data= with it")
        for k in range(cfg.data.splits):
            mine = [s for s in specs if s.get("split") == k]
            split_data = prepare_data(DataConfig(**mine[0]["data"]).load(), cfg.evaluation)
            check_cells(mine, split_data)
            if not force:
                refuse_stale(mine, out_dir, split_data, accept_code_change=accept_code_change)
        return None
    data = prepare_data(data if data is not None else cfg.data.load(), cfg.evaluation)  # idempotent
    check_cells(specs, data)
    if not force:
        refuse_stale(specs, out_dir, data, accept_code_change=accept_code_change)  # before anything is trained or written
    return data


def _run_more(cfg: CompareConfig, seeds: Sequence[int], out_dir: str, data: Data | None, options: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The rows of every cell of ``seeds`` (checked first, like the first seeds)."""
    specs = cell_specs(cfg, seeds)
    _check(cfg, specs, out_dir, data, force=bool(options["force"]), accept_code_change=bool(options["accept_code_change"]))
    return run_cells(specs, out_dir, data, **options)  # type: ignore[arg-type]


def size_reference(row: Mapping[str, Any]) -> bool:
    """Whether ``row`` is k independently trained members, the reference curve of the
    deep-ensemble equivalent (Ashukha et al. 2020): its method says so from its hyperparameters."""
    return bool(METHODS.get(row["name"]).size_reference(row.get("hyperparameters") or {}))


def write_report(cfg: CompareConfig, rows: Sequence[Mapping[str, Any]], out_dir: str, *, tuning: Sequence[Mapping[str, Any]] = (),
                 seeds: Mapping[str, Any] | None = None) -> str:
    """``results.json`` (all rows), ``results.md`` (tables) and the plots; returns the Markdown.

    ``tuning``: the tuned methods' summaries (the tuning-cost table); ``seeds``: the auto-seeds
    decision (how many seeds ran, and why)."""
    ok = [r for r in rows if "failed" not in r and "skipped" not in r]
    methods = [m.display for m in cfg.methods]
    write_json(os.path.join(out_dir, "results.json"), list(rows))
    own = any(m.model is not None or not m.method_class().uses_model for m in cfg.methods)
    shared = cfg.model.name or cfg.model.factory
    title = f"{shared}{' (and the methods’ own models)' if own else ''} on {cfg.data.name or cfg.data.npz or cfg.data.csv}"
    md = comparison_markdown(ok, methods, cfg.budgets, title=title, reference=size_reference, examples=lambda r: _row_examples(out_dir, r))
    from ..report.uncertainty_tables import uncertainty_markdown

    if seeds is not None:
        from .seeds import decision_markdown

        md += "\n" + decision_markdown(seeds)
    if tuning:
        from ..report.tuning_tables import tuning_markdown

        md += "\n" + tuning_markdown(tuning)
    extra = uncertainty_markdown(ok, methods, cfg.budgets)
    if extra:
        md += "\n\n" + extra
    failed = [r for r in rows if "failed" in r]
    if failed:
        md += "\n\n## Failed cells\n\n" + "\n".join(f"- {r['method']} {r['budget']}B seed {r['seed']}: {r['failed']}" for r in failed) + "\n"
    note = code_note(rows)
    if note:
        md += "\n" + note
    version = code_version()
    md += f"\n_Produced by ensemblekit {version['ensemblekit']} (commit {version['commit']}, code {hashing.code_fingerprint()})._\n"
    atomic_write_text(os.path.join(out_dir, "results.md"), md)
    if ok:
        _comparison_plots(ok, methods, cfg.budgets, out_dir, title)
    from ..report.html import write_html_report

    write_html_report(out_dir, title, md, cfg.model_dump(mode="json", exclude_none=True), version)
    return md


def _row_examples(out_dir: str, row: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The per-example test losses saved in a row's cell folder (None when there are none)."""
    from ..metrics.per_example import load_per_example

    return load_per_example(os.path.join(out_dir, "cells", cell_key(row["method"], row["budget"], row["seed"], row.get("split"))))


def _comparison_plots(ok: Sequence[Mapping[str, Any]], methods: Sequence[str], budgets: Sequence[int], out_dir: str, title: str) -> None:
    """The headline metric (test error, or NLL for regression) against budget and against members, the
    cost Pareto plot and the uncertainty plots of the largest budget."""
    regression = is_regression(ok)
    label, value = headline_metric(ok)
    g = grid(ok, value)
    series, errs = {}, {}
    for m in methods:
        pts = [(b, *mean_std(g[(m, b)])) for b in budgets if (m, b) in g]
        if pts:
            series[m] = ([p[0] for p in pts], [p[1] for p in pts])
            errs[m] = [p[2] for p in pts]
    means = [v for _, ys in series.values() for v in ys if v > 0]
    spread = bool(means) and max(means) > 8 * min(means)  # methods an order of magnitude apart: a log scale shows them all
    line_plot(series, os.path.join(out_dir, "error_vs_budget.png"), "budget (single-model budgets B)", label, title=title, yerr=errs,
              logy=spread and not regression)
    curves = {}
    for m in methods:
        mine = [r for r in ok if r["method"] == m]
        if not mine:
            continue
        top = max(r["budget"] for r in mine)
        runs = [r["test"]["size_curve"] for r in mine if r["budget"] == top]
        n = min(len(c["members"]) for c in runs)
        if n < 2:
            continue
        metric = "nll" if regression else "error"
        curves[f"{m} ({top}B)"] = {
            "members": list(range(1, n + 1)),
            metric: [sum(c["nll"][k] if regression else 100.0 * (1.0 - c["accuracy"][k]) for c in runs) / len(runs) for k in range(n)],
        }
    if curves:
        size_curve_plot(curves, os.path.join(out_dir, "error_vs_members.png"), metric="nll" if regression else "error",
                        title=f"{title}: {label} vs members (mean over seeds)")
    from ..report.pareto import pareto_plot

    pareto_plot(ok, methods, os.path.join(out_dir, "pareto.png"), title=f"{title}: {'RMSE' if regression else 'error'} and NLL against cost")
    if not regression:
        _uncertainty_plots(ok, methods, max(budgets), out_dir, title)
    else:
        from ..report.regression_uncertainty_plots import regression_uncertainty_plots

        regression_uncertainty_plots(ok, methods, max(budgets), out_dir, title)


def _uncertainty_plots(rows: Sequence[Mapping[str, Any]], methods: Sequence[str], top: int, out_dir: str, title: str) -> None:
    from ..report.uncertainty_plots import comparison_risk_curves, conformal_plot, ood_auroc_plot, risk_coverage_plot, shift_boxplot

    shift_boxplot(rows, methods, top, os.path.join(out_dir, "shift.png"), title=f"{title}: under shift ({top}B; boxes over corruptions)")
    ood_auroc_plot(rows, methods, top, os.path.join(out_dir, "ood_auroc.png"), title=f"{title}: OOD detection ({top}B)")
    curves = comparison_risk_curves(rows, methods, top, "msp")
    if curves:
        risk_coverage_plot(curves, os.path.join(out_dir, "risk_coverage.png"), title=f"{title}: selective prediction ({top}B, max probability)")
    conformal_plot(rows, methods, os.path.join(out_dir, "conformal.png"), title=f"{title}: conformal sets (marker size: budget)")
