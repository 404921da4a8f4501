"""Presets: a family of registered methods run as ``compare`` cells, plus the family's own tables.

``ensemblekit nes`` (EdgeNES and its baselines; Zaidi et al. 2021, Babkin & Bakhteev 2024),
``ensemblekit varhyper`` (variational hypernetworks vs per-lambda baselines; Grebenkova et
al. 2020) and ``ensemblekit curve`` (mode-connecting curves; Garipov et al. 2018) are
presets. A :class:`Preset` turns its config into cells — the same units of work as a
comparison's (:mod:`~ensemblekit.experiments.cells`): methods x seeds, each with its
resolved spec, trained into its own folder of the run directory, keyed by the spec's hash
and the code fingerprint, locked while it trains, resumed, reused when it is exactly the
same work, refused when it is not (``force`` / ``accept_code_change``) — and summarises the
cells' rows into the family's cross-run tables and plots (``nes.md``, ``varhyper.md``,
``curve.md``, ``report.html``). What a cell's row holds of its own (EdgeNES's pool, a
family's pruning table) comes from the method (:meth:`Method.details`).

Cells come in stages: a stage starts when the one before has finished (a curve is fitted
between endpoints another cell trains). Background: ``docs/methods.md``.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import yaml

from ..config import MethodConfig
from ..data.dataset import Data
from ..errors import ConfigError
from ..evaluation.config import EvaluationConfig
from ..methods.base import METHODS
from ..serialization import atomic_write_text
from .backends import Backend, LocalBackend, get_backend
from .cells import check_cells, refuse_stale, run_cells
from .provenance import code_note

__all__ = ["Preset", "Summary", "TableSpec", "PresetRun", "PRESET_NAMES", "get_preset", "preset_cell", "shared_params",
           "run_preset", "write_preset_html"]

#: The presets, each defined by the module of that name in this package (its ``PRESET``).
PRESET_NAMES = ("nes", "varhyper", "curve")

Cell = tuple[Mapping[str, Any], dict[str, Any]]  # a cell's spec and its row ("failed" in it when it failed)


@dataclass(frozen=True)
class TableSpec:
    """A table the command prints: title, header, rows of strings."""

    title: str
    header: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class Summary:
    """What a preset's summary gives: its results (the preset's JSON), its Markdown report, the
    report's file name in the run directory and the title of ``report.html``."""

    results: dict[str, Any]
    markdown: str
    report: str
    title: str


@dataclass(frozen=True)
class Preset:
    """A family as a config of cells, and what it makes of their rows.

    Args:
        name: the command (``ensemblekit <name>``).
        config: the YAML schema (a pydantic model with ``data``, ``backend`` and ``out``).
        cells: ``(cfg, run_dir) -> [stage, ...]``, each stage a list of cell specs (:func:`preset_cell`).
        summarize: ``(cfg, cells, data, run_dir, plots) -> Summary``: the cross-run tables and
            plots from every cell's ``(spec, row)`` (failed cells carry ``failed``).
        show: ``(cfg, results, data, run_dir) -> [str | TableSpec]``: what the command prints.
        run_dir_suffix: added to the default run directory's name (``cfg -> str``).
        cell_options: :func:`~ensemblekit.experiments.cells.run_cell` options of every cell
            (``report``: the method's own per-run report; ``keep_checkpoints``).
        backend_runs: what the execution backend runs: ``cells`` (one cell per task) or
            ``candidates`` (the cells one after another here, the architectures each trains on
            the backend: the search they share is computed once).
    """

    name: str
    config: type
    cells: Callable[[Any, str], list[list[dict[str, Any]]]]
    summarize: Callable[[Any, Sequence[Cell], Data, str, bool], Summary]
    show: Callable[[Any, Mapping[str, Any], Data, str], list[Any]]
    run_dir_suffix: Callable[[Any], str] | None = None
    cell_options: Mapping[str, Any] = field(default_factory=dict)
    backend_runs: str = "cells"


def get_preset(name: str) -> Preset:
    """The preset ``name`` (one of :data:`PRESET_NAMES`)."""
    if name not in PRESET_NAMES:
        raise ConfigError(f"unknown preset {name!r}; valid: {', '.join(PRESET_NAMES)}")
    return importlib.import_module(f"{__package__}.{name}").PRESET


def shared_params(method: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """The preset's shared ``settings`` that the registered ``method`` takes: those its ``Params`` declare."""
    fields = METHODS.get(method).Params.model_fields
    return {k: v for k, v in settings.items() if k in fields}


def preset_cell(cfg: Any, *, key: str, method: Mapping[str, Any], seed: int, train: Any, model: Any = None, folder: str | None = None,
                **extra: Any) -> dict[str, Any]:
    """A preset's cell spec: the fields of a comparison's cell (:func:`~ensemblekit.experiments.compare.cell_specs`)
    with no budget (the method runs as configured) and the ``folder`` it trains into (default ``key``).

    Args:
        cfg: the preset config (its ``data``). key: the cell's name (unique in the run).
        method: a :class:`~ensemblekit.config.MethodConfig` entry (``name``, ``label``, hyperparameters).
        seed: the cell's seed. train: a :class:`~ensemblekit.training.config.TrainConfig`.
        model: the model spec (``None``: the method builds its own networks).
        extra: more fields the cell is keyed by (e.g. how the preset evaluates it).
    """
    entry = MethodConfig(**method)
    return {"data": cfg.data.model_dump(mode="json", exclude_none=True), "train": train.model_dump(mode="json", exclude_unset=True),
            "evaluation": EvaluationConfig().model_dump(mode="json"), "model": model, "method": entry.model_dump(mode="json", exclude_none=True),
            "label": entry.display, "budget": None, "seed": int(seed), "key": key, "folder": folder or key, **extra}


@dataclass
class PresetRun:
    """What :func:`run_preset` gives: the summary's results and Markdown, every cell and the failed ones."""

    results: dict[str, Any]
    markdown: str
    cells: list[Cell]
    failed: list[Cell]
    out: str


def run_preset(preset: Preset, cfg: Any, run_dir: str, *, data: Data | None = None, backend: Backend | None = None, force: bool = False,
               accept_code_change: bool = False, plots: bool = True,
               on_done: Callable[[Mapping[str, Any], dict[str, Any]], None] | None = None) -> PresetRun:
    """Run every cell of ``preset`` for ``cfg`` into ``run_dir`` (skipping finished ones), then its summary.

    Before anything runs, every cell is checked against the data (a bad config is one error,
    nothing written) and every cell folder holding work of another spec or of other code
    makes the call refuse, unless ``force`` (retrained) or, for a code change,
    ``accept_code_change`` (kept on record; the report names those rows). Writes
    ``config.yaml``, the cells, the preset's tables and plots and ``report.html``. A stage
    with a failed cell ends the run after that stage; the summary covers what finished.

    Args:
        backend: the execution backend (default: ``get_backend(cfg.backend)``); see ``Preset.backend_runs``.
        plots: write the preset's plots.
        on_done: called with ``(spec, row)`` as each cell finishes.

    Raises:
        StaleResultError: a cell folder belongs to another config or other code.
    """
    from ..evaluation.run import prepare_data

    data = prepare_data(data if data is not None else cfg.data.load(), None)
    stages = preset.cells(cfg, run_dir)
    for i, stage in enumerate(stages):
        check_cells(stage, data, inputs_ready=i == 0)
    if not force:
        refuse_stale([spec for stage in stages for spec in stage], run_dir, data, accept_code_change=accept_code_change)
    os.makedirs(run_dir, exist_ok=True)
    atomic_write_text(os.path.join(run_dir, "config.yaml"), yaml.safe_dump(cfg.model_dump(mode="json", exclude_none=True), sort_keys=False))
    backend = backend if backend is not None else get_backend(cfg.backend)
    cells_on, fit_on = (LocalBackend(), backend) if preset.backend_runs == "candidates" else (backend, None)
    cells: list[Cell] = []
    for i, stage in enumerate(stages):
        if i:
            check_cells(stage, data)  # their inputs exist now
        rows = run_cells(stage, run_dir, data, backend=cells_on, on_done=on_done, force=force, accept_code_change=accept_code_change,
                         fit_backend=fit_on, **preset.cell_options)
        cells += list(zip(stage, rows))
        if any("failed" in r for r in rows):
            break
    summary = preset.summarize(cfg, cells, data, run_dir, plots)
    note = code_note([row for _, row in cells])
    md = summary.markdown + (f"\n{note}" if note else "")
    atomic_write_text(os.path.join(run_dir, summary.report), md)
    write_preset_html(run_dir, summary.title, md, cfg)
    return PresetRun(summary.results, md, cells, [c for c in cells if "failed" in c[1]], run_dir)


def write_preset_html(run_dir: str, title: str, md: str, cfg: Any) -> None:
    """``report.html``: the Markdown report, every plot of ``run_dir``, the resolved config and the versions."""
    from ..report.html import write_html_report
    from .provenance import code_version

    write_html_report(run_dir, title, md, cfg.model_dump(mode="json", exclude_none=True) if hasattr(cfg, "model_dump") else None, code_version())
