"""The one results path: a fitted method and its data -> evaluated, saved, one row.

Every command goes through :func:`record_result`: ``train`` (one run), every ``compare``
cell, every ``tune`` trial and the units of the ``nes``, ``varhyper`` and ``curve``
presets. It saves the ensemble, evaluates it on the test (and validation) split with
the method's test-time augmentation (:func:`~ensemblekit.evaluation.evaluate.evaluate_predictor`:
one prediction pass per split), measures the method's cost, asks the method for its
own results (:meth:`~ensemblekit.methods.base.Method.details`) and writes
``results.json``: one row of the schema below, the same for every method.

Row schema (``format: ensemblekit.row/1``):

- ``method`` (the label shown in tables), ``name`` (the registered method), ``budget``
  (k of kB in a comparison, else null), ``seed``, ``members`` (M), ``members_info``;
- ``test`` / ``val``: :func:`~ensemblekit.metrics.summary.evaluate_probs` of the ensemble
  (``accuracy``, ``error`` %, ``nll``, ``brier``, ``ece``; ``members``, ``member_mean``,
  ``diversity``, ``size_curve``), with ``tta`` naming the test-time transforms used;
- ``wall_s``: training seconds (every stage, summed across resumes);
- ``cost``: ``stages_s`` (seconds per stage), ``fit_s``, ``train_flops`` (measured FLOPs of
  every optimisation step, forward and backward, all members), ``flops_by_stage``,
  ``parameters`` (of the ensemble that predicts), ``inference_flops`` (per test example,
  all members, TTA passes included);
- ``evaluation``: the uncertainty evaluation the run's ``evaluation:`` block asks for
  (calibration raw and temperature-scaled, selective prediction, OOD detection, shift,
  conformal sets; :func:`~ensemblekit.evaluation.run.evaluate_uncertainty`, docs/evaluation.md);
- ``hyperparameters``: the method's validated hyperparameters; ``details``: what the method
  reports of its own (EdgeNES's pool, a family's pruning table...);
- ``data``: sizes, classes, shape (``info.held_out_classes`` / ``class_map`` when classes were
  held out of training); ``provenance``: versions, commit, threads, time.

Beside ``results.json`` the run folder keeps ``test_examples.safetensors``: the test predictive's
per-example losses (:mod:`~ensemblekit.metrics.per_example`), which a single-seed comparison's
test-set bootstrap resamples.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from ..data.augment import build_tta
from ..data.dataset import Data
from ..methods.base import Method
from ..methods.from_run import data_digest
from ..evaluation.evaluate import Evaluated, evaluate_predictor
from ..metrics.per_example import save_per_example
from ..serialization import write_json
from ..training.checkpoint import RunDir
from ..training.flops import inference_flops
from .provenance import provenance

__all__ = ["ROW_FORMAT", "record_result", "method_tta", "evaluate_method", "measure_cost", "summary", "load_row"]

ROW_FORMAT = "ensemblekit.row/1"
_SUMMARY = ("accuracy", "error", "nll", "brier", "ece")


def method_tta(method: Method, data: Data) -> list[Any] | None:
    specs = method.train_config_.tta
    return build_tta(specs, data.input_shape) if specs else None


def evaluate_method(method: Method, data: Data, evaluation: Any = None) -> Evaluated:
    """Test and validation metrics of ``method.ensemble_`` and its uncertainty evaluation, with the
    method's ``train.tta`` transforms averaged as in training's validation (``None`` for a missing split);
    see :func:`~ensemblekit.evaluation.evaluate.evaluate_predictor`."""
    names = [t if isinstance(t, str) else dict(t) for t in method.train_config_.tta]
    return evaluate_predictor(method.ensemble_, data, evaluation, tta=method_tta(method, data), tta_names=names)


def measure_cost(method: Method, data: Data) -> dict[str, Any]:
    """Seconds per stage, measured training FLOPs, parameters and inference FLOPs per example."""
    ens = method.ensemble_
    x = data.test.tensors()[0][:64].to(ens.device)
    per_pass = inference_flops(ens, x)
    passes = max(1, len(method.train_config_.tta))
    return {
        "stages_s": {k: round(v, 3) for k, v in method.cost_.items() if k != "fit_s"},
        "fit_s": round(method.cost_.get("fit_s", 0.0), 3),
        "train_flops": method.train_flops_,
        "flops_by_stage": dict(method.flops_),
        "parameters": int(ens.num_parameters()),
        "inference_flops": per_pass * passes,
    }


def record_result(method: Method, data: Data, run_dir: str, *, label: str | None = None, budget: int | None = None,
                  extra: Mapping[str, Any] | None = None, plots: bool = True, report: bool = True, evaluation: Any = None) -> dict[str, Any]:
    """Save, evaluate and cost a fitted method; write ``results.json`` into ``run_dir``; return the row.

    Args:
        method: a fitted :class:`~ensemblekit.methods.base.Method`.
        data: the data it was trained on (its test and val splits are evaluated).
        run_dir: the run's folder (``ensemble.safetensors``, ``results.json``, plots).
        label: the row's name in tables (default the method's name). budget: kB's k.
        extra: more JSON-able fields for the row (e.g. the resolved config).
        plots: write ``reliability.png``, ``size_curve.png``, ``training_curves.png``.
        report: let the method write its own files (:meth:`Method.report`).
        evaluation: the ``evaluation:`` block (an EvaluationConfig or mapping; default: calibration
            and selective prediction), its results in the row's ``evaluation``.

    Returns:
        The row (see the module docstring).
    """
    rd = RunDir(run_dir)
    ens = method.ensemble_
    ens.save(rd.file("ensemble.safetensors"))
    test, val, uncertainty, test_pd = evaluate_method(method, data, evaluation)
    row: dict[str, Any] = {
        "format": ROW_FORMAT,
        "method": label or method.name,
        "name": method.name,
        "budget": budget,
        "seed": int(method.seed),
        "members": ens.num_members,
        "members_info": ens.members_info,
        "wall_s": round(method.train_seconds_, 3),
        "cost": measure_cost(method, data),
        "test": test,
        **({"val": val} if val is not None else {}),
        "evaluation": uncertainty,
        "hyperparameters": method.params_.model_dump(mode="json", fallback=_name_of),
        "details": method.details(data),
        "data": {**data.describe(), "digest": data_digest(data)},
        "provenance": provenance(),
        **dict(extra or {}),
    }
    save_per_example(run_dir, test_pd, data.test.tensors()[1].cpu())  # what a single-seed table's bootstrap resamples
    if plots:
        _standard_plots(method, data, rd, test, uncertainty, test_pd)
    if "tensorboard" in method.train_config_.loggers:
        from ..training.tracking import log_result

        hparams = {"method": row["method"], "name": method.name, "budget": budget, "seed": row["seed"], "members": row["members"],
                   **{f"hp/{k}": v for k, v in row["hyperparameters"].items()}}
        log_result(run_dir, row, hparams, rd.file("reliability.png") if plots else None)
    write_json(rd.file("results.json"), row)  # last: results.json marks the unit done
    if report:
        method.report(rd, data)
    return row


def summary(row: Mapping[str, Any], split: str = "test") -> dict[str, float]:
    """The headline metrics of a row's split: accuracy, error %, NLL, Brier, ECE."""
    return {k: row[split][k] for k in _SUMMARY}


def _name_of(obj: Any) -> str:
    return getattr(obj, "__qualname__", type(obj).__name__)


def _standard_plots(method: Method, data: Data, rd: RunDir, test: Mapping[str, Any], uncertainty: Mapping[str, Any],
                    pd: Any) -> None:
    from ..metrics.calibration import scale_probs
    from ..report.plots import reliability_diagram, size_curve_plot, training_curves
    from ..report.uncertainty_plots import run_plots

    if method.history_:
        training_curves(method.history_, rd.file("training_curves.png"), title=method.name)
    if data.is_regression:
        _regression_plots(method, data, rd, test, pd)
        return
    probs = pd.probs
    y = data.test.tensors()[1]
    cal = uncertainty.get("calibration")
    calibrated = scale_probs(probs.mean(0), cal["pool_then_calibrate"]["temperature"]) if cal else None
    reliability_diagram(probs.mean(0), y, rd.file("reliability.png"), title=f"{method.name}: test reliability", calibrated=calibrated)
    run_plots(uncertainty, rd, title=method.name)
    size_curve_plot({method.name: test["size_curve"]}, rd.file("size_curve.png"), title=f"{method.name}: test error vs members")


def _regression_plots(method: Method, data: Data, rd: RunDir, test: Mapping[str, Any], pd: Any) -> None:
    """Quantile calibration (raw and variance-scaled), NLL vs members and, for one input feature,
    the predictive band (aleatoric and epistemic shaded apart)."""
    from ..metrics.regression_calibration import quantile_calibration, scale_variance
    from ..report.regression_plots import predictive_band, regression_calibration_plot, regression_size_curve_plot

    x, y = data.test.tensors()
    curves = {"raw": quantile_calibration(pd, y)}
    cal = test.get("calibrated")
    if cal:
        curves[f"variance-scaled (x{cal['variance_scale']:.3g})"] = quantile_calibration(scale_variance(pd, cal["variance_scale"]), y)
    regression_calibration_plot(curves, rd.file("calibration.png"), title=f"{method.name}: test quantile calibration")
    regression_size_curve_plot({method.name: test["size_curve"]}, rd.file("size_curve.png"), metric="nll",
                               title=f"{method.name}: test NLL vs members")
    if x[0].numel() == 1 and pd.mean.dim() == 2:
        train = data.train.tensors()
        predictive_band(pd, x.reshape(-1), rd.file("band.png"), train=(train[0].reshape(-1), train[1]),
                        title=f"{method.name}: predictive mean ± 2 std")


def load_row(run_dir: str) -> dict[str, Any] | None:
    """The row a finished run wrote, or ``None`` when it has none yet."""
    from ..serialization import read_json

    path = os.path.join(run_dir, "results.json")
    return read_json(path) if os.path.exists(path) else None

