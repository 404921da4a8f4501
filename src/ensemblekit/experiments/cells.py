"""Cells: the unit of work of ``compare`` and of every preset (``nes``, ``varhyper``, ``curve``).

A *cell* is one registered method at one seed (and, in a comparison, one budget),
described by a resolved, JSON-able spec: ``data``, ``train``, ``evaluation``, ``model``,
``method`` (a :class:`~ensemblekit.config.MethodConfig`), ``label``, ``budget`` (``None``
for a preset's cell: the method as configured, no budget to spend), ``seed``, ``key`` and,
for a preset, the ``folder`` it trains into. A cell is a pure function of its spec: it
trains into its folder (``cells/<key>`` in a comparison), resumes from the checkpoints
it finds there, and is recorded through the one results path
(:func:`~ensemblekit.experiments.results.record_result`).

Cells are keyed by :func:`train_hash` (their spec and the data's contents) and the code
fingerprint (:mod:`~ensemblekit.experiments.units`): a finished cell is reused only when
both match, a cell of another spec or other code is refused (``force``: retrained;
``accept_code_change``: kept on record), and a cell another process is training is
waited for (:func:`run_cells`). Cells of one run share ``<out>/cache`` (a DARTS search,
trained candidate architectures: pure functions of their own spec).
"""

from __future__ import annotations

import os
import shutil
from typing import Any, Callable, Mapping, Sequence

from pydantic import ValidationError

from ..config import DataConfig, MethodConfig
from ..data.dataset import Data
from ..errors import ConfigError, EnsembleKitError
from ..methods.from_run import run_digest
from ..schema import format_validation_error
from ..serialization import write_json
from ..training.config import TrainConfig
from .backends import Backend, LocalBackend, Outcome
from .results import record_result
from .run import build_method
from .units import UnitBusyError, claim, finished_row, unit_hash, wait_for

__all__ = ["train_hash", "cell_dir", "cell_data", "cell_method", "run_cell", "compare_cell", "check_cells", "refuse_stale",
           "run_cells", "cell_row"]

#: Spec fields that name or place a cell without changing what it trains (a changed
#: ``evaluation`` re-evaluates the saved ensemble instead of retraining it).
_NOT_TRAINED = ("key", "folder", "evaluation")


def train_hash(spec: Mapping[str, Any], data: Data) -> str:
    """The hash a cell's training is keyed by: its spec without ``key``, ``folder`` and ``evaluation``
    (held-out classes are in the spec and the data digest), and the contents of the finished runs
    its method reads (:attr:`~ensemblekit.methods.base.Method.run_inputs`: ``from_run``, a teacher)."""
    keyed = {k: v for k, v in spec.items() if k not in _NOT_TRAINED}
    runs = _input_runs(spec.get("method"))
    if runs:
        keyed["input_runs"] = runs
    return unit_hash(keyed, data.digest())


def _input_runs(method: Any) -> dict[str, str | None]:
    """``{param: run digest}`` for the method's run-valued hyperparameters that name a directory."""
    if not isinstance(method, Mapping) or "name" not in method:
        return {}
    cfg = MethodConfig(**method)
    params = dict(cfg.params)
    return {f: run_digest(params[f]) for f in cfg.method_class().run_inputs if isinstance(params.get(f), str)}


def cell_dir(out_dir: str, spec: Mapping[str, Any]) -> str:
    """The cell's folder: ``<out_dir>/<folder>`` for a preset's cell, else ``<out_dir>/cells/<key>``."""
    return os.path.join(out_dir, spec.get("folder") or os.path.join("cells", spec["key"]))


def cell_data(spec: Mapping[str, Any]) -> Data:
    """The data a cell trains on: its dataset, without the held-out classes of its evaluation."""
    from ..evaluation.run import prepare_data

    return prepare_data(DataConfig(**spec["data"]).load(), spec.get("evaluation"))


def cell_method(spec: Mapping[str, Any], data: Data) -> tuple[Any, dict[str, Any] | None]:
    """The cell's method built at its budget, and the keyword arguments that spend it
    (``(None, None)`` when the method cannot run within that budget; ``(method, None)`` for a
    cell without a budget: the method exactly as its ``method`` entry configures it).

    With ``budget_unit: flops`` the epoch-mode allocation is rescaled so that the method's
    measured training FLOPs are k times those of one single model trained with ``train``
    (every epoch length of the allocation — ``epochs``, ``budget_epochs``, ``cycle_epochs`` —
    times the same factor); a method without an epoch knob keeps its epoch-mode allocation
    (``budget_kwargs.budget_unit`` says which applied)."""
    method_cfg = MethodConfig(**spec["method"])
    if spec.get("budget") is None:
        return build_method(method_cfg, spec.get("model"), spec["train"], int(spec["seed"])), None
    train = {**spec["train"], **method_cfg.train}
    try:
        kwargs = method_cfg.method_class().at_budget(int(spec["budget"]), TrainConfig(**train), dict(method_cfg.params))
    except ValidationError as exc:
        raise ConfigError(f"{spec['label']}: " + format_validation_error(exc, prefix="train", root=TrainConfig)) from None
    if kwargs is None:
        return None, None
    method = build_method(method_cfg, spec["model"], spec["train"], int(spec["seed"]), **kwargs)
    if spec.get("budget_unit") == "flops":
        kwargs, unit, target, passes = _flops_allocation(spec, method, kwargs, data)
        method = build_method(method_cfg, spec["model"], spec["train"], int(spec["seed"]), **kwargs)
        # the row's: the report shows the passes over the data and marks a miss beyond 5% of the budget
        kwargs = {**kwargs, "budget_unit": unit, "budget_flops": target, **({"passes": round(passes, 3)} if passes else {})}
    return method, kwargs


_EPOCH_KEYS = ("epochs", "budget_epochs", "cycle_epochs")


def _flops_allocation(spec: Mapping[str, Any], method: Any, kwargs: dict[str, Any], data: Data) -> tuple[dict[str, Any], str, float, float | None]:
    """The allocation whose training FLOPs are the budget's: the budget less the method's other passes
    (:meth:`~ensemblekit.methods.base.Method.pass_flops`), divided by one epoch's FLOPs, in whole
    optimisation steps (``train.steps``: the last pass cut short, the schedule spanning exactly
    them); every epoch length of the allocation scaled by the same factor. Returns the keyword arguments,
    the unit that applied, the budget's FLOPs and the passes over the training split (steps / steps per epoch)."""
    from ..data.batching import steps_per_epoch

    single = build_method(MethodConfig(name="independent"), spec["budget_model"], spec["train"], 0, members=1)
    target = int(spec["budget"]) * single.epoch_flops(data) * TrainConfig(**spec["train"]).epochs
    per_epoch = method.epoch_flops(data)
    if per_epoch is None:
        return kwargs, "epochs", target, None
    batch, n = method.train_config_.batch_size, len(data.train)
    spe = steps_per_epoch(data.train, batch)
    fitted = max(0.0, (target - method.pass_flops(data)) / per_epoch)  # passes over the training split
    whole = int(fitted)  # full passes, then the batches (all full but an epoch's last) of the fraction left
    steps = max(1, whole * spe + int(round((fitted - whole) * n / batch)))
    epochs = int(kwargs.get("epochs", method.train_config_.epochs))
    ratio = steps / (epochs * spe)
    out = {**kwargs, "epochs": -(-steps // spe), "steps": steps}
    for key in _EPOCH_KEYS[1:]:
        if kwargs.get(key) is not None:
            out[key] = kwargs[key] * ratio if key == "cycle_epochs" else max(1, int(round(kwargs[key] * ratio)))
    return out, "flops", target, whole + (steps - whole * spe) * batch / n if steps > whole * spe else float(steps // spe)


def run_cell(spec: Mapping[str, Any], cell_dir: str, data: Data | None = None, cache_dir: str | None = None, force: bool = False,
             accept_code_change: bool = False, *, fit_backend: Backend | None = None, report: bool = True,
             keep_checkpoints: bool = False) -> dict[str, Any]:
    """Train and evaluate one cell into ``cell_dir`` (resuming from its checkpoints); returns its row.

    The cell is keyed by :func:`train_hash` (:mod:`~ensemblekit.experiments.units`): a finished
    cell is reused only under the same hash, a cell trained under another spec is refused
    (``force``: retrained), a cell computed by other code is refused unless ``force``
    (recomputed) or ``accept_code_change`` (kept, recorded), and a cell another process is
    training raises :class:`~ensemblekit.experiments.units.UnitBusyError`.

    Args:
        fit_backend: where the method's own units run (EdgeNES's candidates; default: here).
        report: let the method write its own tables and plots (:meth:`Method.report`).
        keep_checkpoints: keep ``checkpoints/`` once the row is written (default: removed,
            ``results.json`` marks the cell done); a preset whose summary rebuilds a trained
            model from them keeps them.
    """
    method_cfg = MethodConfig(**spec["method"])
    data = data if data is not None else cell_data(spec)
    digest = train_hash(spec, data)
    done = finished_row(cell_dir, digest, force=force, accept_code_change=accept_code_change)
    if done is not None:
        return done if "skipped" in done or _evaluated_as(done, spec) else _reevaluate(spec, cell_dir, done, data, digest)
    budget = None if spec.get("budget") is None else int(spec["budget"])
    with claim(cell_dir, digest, spec):
        method, budget_kwargs = cell_method(spec, data)
        if method is None:  # the method cannot spend this budget (e.g. a curve needs 3B)
            row = {"method": spec["label"], "name": method_cfg.name, "budget": budget, "seed": int(spec["seed"]),
                   "skipped": f"{method_cfg.name} cannot run within {spec['budget']}B", "spec_hash": digest}
            write_json(os.path.join(cell_dir, "results.json"), row)
            return row
        method.fit(data, run_dir=cell_dir, resume=True, cache_dir=cache_dir, backend=fit_backend)
        extra = {**({"budget_kwargs": budget_kwargs} if budget is not None else {}), "spec_hash": digest,
                 **({"split": spec["split"]} if spec.get("split") is not None else {})}
        row = record_result(method, data, cell_dir, label=spec["label"], budget=budget, plots=False, report=report, extra=extra,
                            evaluation=spec.get("evaluation"))
        if not keep_checkpoints:
            shutil.rmtree(os.path.join(cell_dir, "checkpoints"), ignore_errors=True)  # results.json now marks the cell done
    return row


def _evaluated_as(row: Mapping[str, Any], spec: Mapping[str, Any]) -> bool:
    from ..evaluation.config import as_evaluation, evaluation_hash

    return (row.get("evaluation") or {}).get("hash") == evaluation_hash(as_evaluation(spec.get("evaluation")))


def _reevaluate(spec: Mapping[str, Any], cell_dir: str, row: dict[str, Any], data: Data, digest: str) -> dict[str, Any]:
    """A finished cell under a changed ``evaluation``: evaluate its saved ensemble again (nothing is retrained)."""
    from ..evaluation.evaluate import evaluate_predictor
    from ..metrics.per_example import save_per_example
    from ..predictors import load_predictor
    from ..training.engine import resolve_device
    from .results import method_tta

    with claim(cell_dir, digest, spec):
        method, _ = cell_method(spec, data)  # the cell's test-time transforms
        method.validate()
        pred = load_predictor(os.path.join(cell_dir, "ensemble.safetensors"), device=resolve_device(method.train_config_.device))
        names = [t if isinstance(t, str) else dict(t) for t in method.train_config_.tta]
        test, val, uncertainty, test_pd = evaluate_predictor(pred, data, spec.get("evaluation"), tta=method_tta(method, data), tta_names=names)
        save_per_example(cell_dir, test_pd, data.test.tensors()[1].cpu())
        # every metric computed again (a changed evaluation or metrics version); size curves and
        # diversity of the training-time row are kept where the new test dict has none
        row = {**row, "test": {**row.get("test", {}), **test}, "val": ({**(row.get("val") or {}), **val} if val else row.get("val")),
               "evaluation": uncertainty}
        write_json(os.path.join(cell_dir, "results.json"), row)
    return row


def compare_cell(spec: Mapping[str, Any], *, out_dir: str, data: Data | None = None, force: bool = False,
                 accept_code_change: bool = False, **options: Any) -> dict[str, Any]:
    """The unit of work of a comparison or preset: one cell, trained into :func:`cell_dir` (sharing
    ``<out_dir>/cache``); ``options`` are :func:`run_cell`'s (``fit_backend``, ``report``, ``keep_checkpoints``)."""
    return run_cell(spec, cell_dir(out_dir, spec), data, cache_dir=os.path.join(out_dir, "cache"), force=force,
                    accept_code_change=accept_code_change, **options)


def cell_row(spec: Mapping[str, Any], outcome: Outcome) -> dict[str, Any]:
    """The row of a cell's outcome: its results row, or ``failed`` with the error that stopped it."""
    if outcome.ok:
        row = dict(outcome.value or {})
    else:
        row = {"method": spec["label"], "budget": spec["budget"], "seed": spec["seed"], "failed": outcome.error}
    row.setdefault("elapsed_s", outcome.elapsed_s)
    return row


def _where(spec: Mapping[str, Any]) -> str:
    return f"{spec['label']} {spec['budget']}B" if spec.get("budget") is not None else f"{spec['label']}, seed {spec['seed']}"


def check_cells(specs: Sequence[Mapping[str, Any]], data: Data, *, inputs_ready: bool = True) -> None:
    """Build every cell's method and check it against the data (nothing trains, nothing is
    written): a bad method config in one cell stops the run before any cell runs.

    ``inputs_ready=False``: the cells read files other cells write (a curve's endpoints), so
    only their hyperparameters and training options are validated now; they are checked in
    full when their inputs exist."""
    from ..evaluation.run import check_evaluation

    if specs:
        check_evaluation(specs[0].get("evaluation"), data)
    for spec in specs:
        try:
            method, _ = cell_method(spec, data)
            if method is not None and inputs_ready:
                method.check(data)
            elif method is not None:
                method.validate()
        except EnsembleKitError as exc:
            raise type(exc)(f"{_where(spec)}: {exc}") from None


def refuse_stale(specs: Sequence[Mapping[str, Any]], out_dir: str, data: Data, accept_code_change: bool = False) -> None:
    """Refuse, before anything is trained or written, when a cell folder of ``out_dir`` holds work of
    another spec or of other code (see :func:`~ensemblekit.experiments.units.finished_row`).

    Raises:
        StaleResultError: the first such cell.
    """
    for spec in specs:
        finished_row(cell_dir(out_dir, spec), train_hash(spec, data), accept_code_change=accept_code_change)


def run_cells(specs: Sequence[Mapping[str, Any]], out_dir: str, data: Data, *, backend: Backend | None = None,
              on_done: Callable[[Mapping[str, Any], dict[str, Any]], None] | None = None, force: bool = False,
              accept_code_change: bool = False, **options: Any) -> list[dict[str, Any]]:
    """Run every cell on ``backend`` (default: one after another here); their rows, in ``specs`` order.

    A cell that another process is training is waited for and its row taken (or trained here,
    if that process died), so two commands on one ``out_dir`` share the cells instead of
    training them twice. ``on_done(spec, row)`` is called as each cell finishes; ``options``
    go to :func:`run_cell`.
    """
    backend = backend or LocalBackend()
    context = {"out_dir": out_dir, "data": data, "force": force, "accept_code_change": accept_code_change, **options}
    busy: list[int] = []

    def done(spec: Mapping[str, Any], outcome: Outcome) -> None:
        if not outcome.ok and str(outcome.error).startswith(UnitBusyError.__name__):
            busy.append(list(specs).index(spec))  # reported once it has finished elsewhere
        elif on_done is not None:
            on_done(spec, cell_row(spec, outcome))

    outcomes = backend.map(compare_cell, specs, context=context, on_done=done)
    for i in busy:  # trained by another process right now: wait, then take its row (or train it, if that process died)
        wait_for(os.path.join(cell_dir(out_dir, specs[i]), ".lock"))
        outcomes[i] = LocalBackend().map(compare_cell, [specs[i]], context={**context, "force": False})[0]
        if on_done is not None:
            on_done(specs[i], cell_row(specs[i], outcomes[i]))
    return [cell_row(spec, o) for spec, o in zip(specs, outcomes)]
