"""Comparisons of methods x budgets x seeds: the budget table of Garipov et al. (2018) for any
model, data and registered method.

Each *cell* (method, budget, seed) is an independent unit of work: a pure function of
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
import shutil
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import yaml

from pydantic import ValidationError

from .. import hashing
from ..config import CompareConfig, DataConfig, MethodConfig
from ..errors import ConfigError, EnsembleKitError
from ..schema import format_validation_error
from ..data.dataset import Data
from ..report.plots import line_plot, size_curve_plot
from ..report.tables import comparison_markdown, grid, mean_std
from ..serialization import atomic_write_text, write_json
from ..training.config import TrainConfig
from .backends import Backend, LocalBackend, Outcome
from .provenance import code_note, code_version
from .results import record_result
from .run import build_method
from .units import UnitBusyError, claim, finished_row, unit_hash, wait_for

__all__ = ["Comparison", "cell_specs", "run_cell", "compare_cell", "run_compare", "write_report"]


@dataclass
class Comparison:
    """What :func:`run_compare` gives: every cell's row (in table order) and the report's Markdown."""

    rows: list[dict[str, Any]]
    markdown: str
    out: str
    failed: list[dict[str, Any]] = field(default_factory=list)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "method"


def cell_specs(cfg: CompareConfig) -> list[dict[str, Any]]:
    """The resolved, JSON-able spec of every cell, in table order."""
    base = {
        "data": cfg.data.model_dump(mode="json", exclude_none=True),
        "train": cfg.train.model_dump(mode="json", exclude_unset=True),
        "evaluation": cfg.evaluation.model_dump(mode="json"),
    }
    if cfg.evaluation.held_out_classes is not None:  # they change the training data: part of what every cell trains on
        base["held_out_classes"] = cfg.evaluation.held_out_classes
    specs = []
    for m in cfg.methods:
        for budget in cfg.budgets:
            for seed in cfg.seeds:
                key = f"{_slug(m.display)}-b{budget}-s{seed}"
                spec = {**base, "model": m.model_spec(cfg.model), "method": m.model_dump(mode="json", exclude_none=True),
                        "label": m.display, "budget": budget, "seed": seed, "key": key}
                if cfg.budget_unit == "flops":  # the single model whose FLOPs a budget counts
                    spec["budget_unit"], spec["budget_model"] = "flops", cfg.model.spec()
                specs.append(spec)
    return specs


def train_hash(spec: Mapping[str, Any], data: Data) -> str:
    """The hash a cell's training is keyed by: its spec without ``key`` and ``evaluation`` (a changed
    evaluation re-evaluates the saved ensemble; held-out classes are in the spec and the data digest)."""
    return unit_hash({k: v for k, v in spec.items() if k not in ("key", "evaluation")}, data.digest())


def cell_data(spec: Mapping[str, Any]) -> Data:
    """The data a cell trains on: its dataset, without the held-out classes of its evaluation."""
    from ..evaluation.run import prepare_data

    return prepare_data(DataConfig(**spec["data"]).load(), spec.get("evaluation"))


def cell_method(spec: Mapping[str, Any], data: Data) -> tuple[Any, dict[str, Any] | None]:
    """The cell's method built at its budget, and the keyword arguments that spend it
    (``(None, None)`` when the method cannot run within that budget).

    With ``budget_unit: flops`` the epoch-mode allocation is rescaled so that the method's
    measured training FLOPs are k times those of one single model trained with ``train``
    (every epoch length of the allocation — ``epochs``, ``budget_epochs``, ``cycle_epochs`` —
    times the same factor); a method without an epoch knob keeps its epoch-mode allocation
    (``budget_kwargs.budget_unit`` says which applied)."""
    method_cfg = MethodConfig(**spec["method"])
    train = {**spec["train"], **method_cfg.train}
    try:
        kwargs = method_cfg.method_class().at_budget(int(spec["budget"]), TrainConfig(**train), dict(method_cfg.params))
    except ValidationError as exc:
        raise ConfigError(f"{spec['label']}: " + format_validation_error(exc, prefix="train", root=TrainConfig)) from None
    if kwargs is None:
        return None, None
    method = build_method(method_cfg, spec["model"], spec["train"], int(spec["seed"]), **kwargs)
    if spec.get("budget_unit") == "flops":
        kwargs, unit = _flops_allocation(spec, method, kwargs, data)
        method = build_method(method_cfg, spec["model"], spec["train"], int(spec["seed"]), **kwargs)
        kwargs = {**kwargs, "budget_unit": unit}
    return method, kwargs


_EPOCH_KEYS = ("epochs", "budget_epochs", "cycle_epochs")


def _flops_allocation(spec: Mapping[str, Any], method: Any, kwargs: dict[str, Any], data: Data) -> tuple[dict[str, Any], str]:
    per_epoch = method.epoch_flops(data)
    if per_epoch is None:
        return kwargs, "epochs"
    single = build_method(MethodConfig(name="independent"), spec["budget_model"], spec["train"], 0, members=1)
    target = int(spec["budget"]) * single.epoch_flops(data) * TrainConfig(**spec["train"]).epochs
    epochs = int(kwargs.get("epochs", method.train_config_.epochs))
    fitted = max(1, int(round(target / per_epoch)))  # the nearest whole number of epochs (the FLOPs column shows the exact cost)
    ratio = fitted / epochs
    out = {**kwargs, "epochs": fitted}
    for key in _EPOCH_KEYS[1:]:
        if kwargs.get(key) is not None:
            out[key] = kwargs[key] * ratio if key == "cycle_epochs" else max(1, int(round(kwargs[key] * ratio)))
    return out, "flops"


def run_cell(spec: Mapping[str, Any], cell_dir: str, data: Data | None = None, cache_dir: str | None = None, force: bool = False,
             accept_code_change: bool = False) -> dict[str, Any]:
    """Train and evaluate one cell into ``cell_dir`` (resuming from its checkpoints); returns its row.

    The cell is keyed by the hash of its resolved spec and the data (:mod:`~ensemblekit.experiments.units`):
    a finished cell is reused only under the same hash, a cell trained under another spec is
    refused (``force``: retrained), a cell computed by other code is refused unless ``force``
    (recomputed) or ``accept_code_change`` (kept, recorded), and a cell another process is training raises
    :class:`~ensemblekit.experiments.units.UnitBusyError`.
    """
    method_cfg = MethodConfig(**spec["method"])
    data = data if data is not None else cell_data(spec)
    digest = train_hash(spec, data)
    done = finished_row(cell_dir, digest, force=force, accept_code_change=accept_code_change)
    if done is not None:
        return done if "skipped" in done or _evaluated_as(done, spec) else _reevaluate(spec, cell_dir, done, data, digest)
    with claim(cell_dir, digest, spec):
        method, budget_kwargs = cell_method(spec, data)
        if method is None:  # the method cannot spend this budget (e.g. a curve needs 3B)
            row = {"method": spec["label"], "name": method_cfg.name, "budget": int(spec["budget"]), "seed": int(spec["seed"]),
                   "skipped": f"{method_cfg.name} cannot run within {spec['budget']}B", "spec_hash": digest}
            write_json(os.path.join(cell_dir, "results.json"), row)
            return row
        method.fit(data, run_dir=cell_dir, resume=True, cache_dir=cache_dir)
        row = record_result(method, data, cell_dir, label=spec["label"], budget=int(spec["budget"]), plots=False, report=True,
                            extra={"budget_kwargs": budget_kwargs, "spec_hash": digest}, evaluation=spec.get("evaluation"))
        shutil.rmtree(os.path.join(cell_dir, "checkpoints"), ignore_errors=True)  # results.json now marks the cell done
    return row


def _evaluated_as(row: Mapping[str, Any], spec: Mapping[str, Any]) -> bool:
    from ..evaluation.config import as_evaluation, evaluation_hash

    return (row.get("evaluation") or {}).get("hash") == evaluation_hash(as_evaluation(spec.get("evaluation")))


def _reevaluate(spec: Mapping[str, Any], cell_dir: str, row: dict[str, Any], data: Data, digest: str) -> dict[str, Any]:
    """A finished cell under a changed ``evaluation``: evaluate its saved ensemble again (nothing is retrained)."""
    from ..predictors import load_predictor
    from ..training.engine import resolve_device
    from ..evaluation.evaluate import evaluate_predictor
    from .results import method_tta

    with claim(cell_dir, digest, spec):
        method, _ = cell_method(spec, data)  # the cell's test-time transforms
        method.validate()
        pred = load_predictor(os.path.join(cell_dir, "ensemble.safetensors"), device=resolve_device(method.train_config_.device))
        names = [t if isinstance(t, str) else dict(t) for t in method.train_config_.tta]
        test, val, uncertainty, _ = evaluate_predictor(pred, data, spec.get("evaluation"), tta=method_tta(method, data), tta_names=names)
        # every metric computed again (a changed evaluation or metrics version); size curves and
        # diversity of the training-time row are kept where the new test dict has none
        row = {**row, "test": {**row.get("test", {}), **test}, "val": ({**(row.get("val") or {}), **val} if val else row.get("val")),
               "evaluation": uncertainty}
        write_json(os.path.join(cell_dir, "results.json"), row)
    return row


def compare_cell(spec: Mapping[str, Any], *, out_dir: str, data: Data | None = None, force: bool = False,
                 accept_code_change: bool = False) -> dict[str, Any]:
    """The unit of work of a comparison: one cell, trained into ``<out_dir>/cells/<key>`` (sharing ``<out_dir>/cache``)."""
    return run_cell(spec, os.path.join(out_dir, "cells", spec["key"]), data, cache_dir=os.path.join(out_dir, "cache"), force=force,
                    accept_code_change=accept_code_change)


def _row(spec: Mapping[str, Any], outcome: Outcome) -> dict[str, Any]:
    if outcome.ok:
        row = dict(outcome.value or {})
    else:
        row = {"method": spec["label"], "budget": spec["budget"], "seed": spec["seed"], "failed": outcome.error}
    row.setdefault("elapsed_s", outcome.elapsed_s)
    return row


def check_cells(specs: Sequence[Mapping[str, Any]], data: Data) -> None:
    """Build every cell's method at its budget and check it against the data (nothing trains,
    nothing is written): a bad method config in one cell stops the comparison before any cell runs."""
    from ..evaluation.run import check_evaluation

    if specs:
        check_evaluation(specs[0].get("evaluation"), data)
    for spec in specs:
        try:
            method, _ = cell_method(spec, data)
            if method is not None:
                method.check(data)
        except EnsembleKitError as exc:
            raise type(exc)(f"{spec['label']} {spec['budget']}B: {exc}") from None


def run_compare(
    cfg: CompareConfig,
    out_dir: str,
    *,
    data: Data | None = None,
    on_done: Callable[[Mapping[str, Any], dict[str, Any]], None] | None = None,
    backend: Backend | None = None,
    force: bool = False,
    accept_code_change: bool = False,
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

    Returns:
        A :class:`Comparison`: the rows (failed cells carry ``failed`` with the error instead
        of metrics) and the Markdown report the CLI prints.

    Raises:
        StaleResultError: a cell of ``out_dir`` belongs to another config (and ``force`` is off).
    """
    from ..evaluation.run import prepare_data

    data = prepare_data(data if data is not None else cfg.data.load(), cfg.evaluation)
    specs = cell_specs(cfg)
    check_cells(specs, data)
    if not force:
        for spec in specs:  # refuse before anything is trained or written
            finished_row(os.path.join(out_dir, "cells", spec["key"]), train_hash(spec, data), accept_code_change=accept_code_change)
    os.makedirs(out_dir, exist_ok=True)
    atomic_write_text(os.path.join(out_dir, "config.yaml"), yaml.safe_dump(cfg.model_dump(mode="json", exclude_none=True), sort_keys=False))
    backend = backend or LocalBackend()
    context = {"out_dir": out_dir, "data": data, "force": force, "accept_code_change": accept_code_change}
    busy: list[int] = []

    def done(spec: Mapping[str, Any], outcome: Outcome) -> None:
        if not outcome.ok and str(outcome.error).startswith(UnitBusyError.__name__):
            busy.append(specs.index(spec))  # reported once it has finished elsewhere
        elif on_done is not None:
            on_done(spec, _row(spec, outcome))

    outcomes = backend.map(compare_cell, specs, context=context, on_done=done)
    for i in busy:  # trained by another process right now: wait, then take its row (or train it, if that process died)
        wait_for(os.path.join(out_dir, "cells", specs[i]["key"], ".lock"))
        outcomes[i] = LocalBackend().map(compare_cell, [specs[i]], context={**context, "force": False})[0]
        if on_done is not None:
            on_done(specs[i], _row(specs[i], outcomes[i]))
    rows = [_row(spec, o) for spec, o in zip(specs, outcomes)]
    md = write_report(cfg, rows, out_dir)
    return Comparison(rows, md, out_dir, [r for r in rows if "failed" in r])


def write_report(cfg: CompareConfig, rows: Sequence[Mapping[str, Any]], out_dir: str) -> str:
    """``results.json`` (all rows), ``results.md`` (tables) and the plots; returns the Markdown."""
    ok = [r for r in rows if "failed" not in r and "skipped" not in r]
    methods = [m.display for m in cfg.methods]
    write_json(os.path.join(out_dir, "results.json"), list(rows))
    own = any(m.model is not None or not m.method_class().uses_model for m in cfg.methods)
    shared = cfg.model.name or cfg.model.factory
    title = f"{shared}{' (and the methods’ own models)' if own else ''} on {cfg.data.name or cfg.data.npz}"
    md = comparison_markdown(ok, methods, cfg.budgets, title=title)
    from ..report.uncertainty_tables import uncertainty_markdown

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
        g = grid(ok, lambda r: 100.0 * (1.0 - r["test"]["accuracy"]))
        series, errs = {}, {}
        for m in methods:
            pts = [(b, *mean_std(g[(m, b)])) for b in cfg.budgets if (m, b) in g]
            if pts:
                series[m] = ([p[0] for p in pts], [p[1] for p in pts])
                errs[m] = [p[2] for p in pts]
        means = [v for _, ys in series.values() for v in ys if v > 0]
        spread = bool(means) and max(means) > 8 * min(means)  # methods an order of magnitude apart: a log scale shows them all
        line_plot(series, os.path.join(out_dir, "error_vs_budget.png"), "budget (single-model budgets B)", "test error (%)", title=title, yerr=errs,
                  logy=spread)
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
            curves[f"{m} ({top}B)"] = {
                "members": list(range(1, n + 1)),
                "error": [sum(100.0 * (1.0 - c["accuracy"][k]) for c in runs) / len(runs) for k in range(n)],
            }
        if curves:
            size_curve_plot(curves, os.path.join(out_dir, "error_vs_members.png"), title=f"{title}: test error vs members (mean over seeds)")
        from ..report.pareto import pareto_plot

        pareto_plot(ok, methods, os.path.join(out_dir, "pareto.png"), title=f"{title}: error and NLL against cost")
        _uncertainty_plots(ok, methods, max(cfg.budgets), out_dir, title)
    from ..report.html import write_html_report

    write_html_report(out_dir, title, md, cfg.model_dump(mode="json", exclude_none=True), version)
    return md


def _uncertainty_plots(rows: Sequence[Mapping[str, Any]], methods: Sequence[str], top: int, out_dir: str, title: str) -> None:
    from ..report.uncertainty_plots import comparison_risk_curves, conformal_plot, ood_auroc_plot, risk_coverage_plot, shift_boxplot

    shift_boxplot(rows, methods, top, os.path.join(out_dir, "shift.png"), title=f"{title}: under shift ({top}B; boxes over corruptions)")
    ood_auroc_plot(rows, methods, top, os.path.join(out_dir, "ood_auroc.png"), title=f"{title}: OOD detection ({top}B)")
    curves = comparison_risk_curves(rows, methods, top, "msp")
    if curves:
        risk_coverage_plot(curves, os.path.join(out_dir, "risk_coverage.png"), title=f"{title}: selective prediction ({top}B, max probability)")
    conformal_plot(rows, methods, os.path.join(out_dir, "conformal.png"), title=f"{title}: conformal sets (marker size: budget)")
