"""Evaluate a predictor on what ensembles are for: calibration, selective prediction, OOD detection, shift, conformal sets.

:func:`evaluate_uncertainty` takes any predictor (every method's ``ensemble_``; see
:mod:`ensemblekit.predictors`), the data it was trained on and an
:class:`~ensemblekit.evaluation.config.EvaluationConfig`, and returns one JSON-able dict
(schema ``ensemblekit.evaluation/1``, documented in docs/evaluation.md). Every quantity is
computed from the members' predictive (:mod:`ensemblekit.evaluation.forward`) in a few
vectorised passes: one forward pass per split, per OOD set and per corruption x severity.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from ..data.dataset import Data
from ..errors import ConfigError
from ..metrics.predictive import Categorical, Gaussian
from .config import MNIST1D_GENERATOR, EvaluationConfig, as_evaluation, evaluation_hash
from .forward import Transform, predictive

__all__ = ["EVALUATION_FORMAT", "thin_curve", "score_histogram", "prepare_data", "check_evaluation", "resolve_corruptions", "evaluate_uncertainty"]

EVALUATION_FORMAT = "ensemblekit.evaluation/1"


def prepare_data(data: Data, evaluation: Any) -> Data:
    """``data`` as the run trains on it: without the held-out classes of ``evaluation`` (if any)."""
    cfg = as_evaluation(evaluation)
    classes = cfg.held_out_classes
    if classes is None or data.info.get("held_out_classes") == classes:
        return data
    from ..data.ood import hold_out_classes

    return hold_out_classes(data, classes)


def resolve_corruptions(cfg: EvaluationConfig, data: Data) -> list[str]:
    """The corruptions the shift suite runs on ``data`` (``[]`` without a ``shift`` block)."""
    if cfg.shift is None:
        return []
    from ..data.shift import default_corruptions

    if cfg.shift.corruptions is not None:
        return list(cfg.shift.corruptions)
    names = list(default_corruptions(data.input_shape))
    return names + ([MNIST1D_GENERATOR] if data.name == "mnist1d" else [])


def check_evaluation(evaluation: Any, data: Data) -> EvaluationConfig:
    """Everything about ``evaluation`` that depends on the data, checked before anything runs or is written.

    Raises:
        ConfigError: a corruption for another kind of input, the MNIST-1D generator on other
            data, calibration or conformal sets without a validation split, held-out classes
            the data was not prepared with. DataError: an OOD ``.npz`` that does not fit the inputs.
    """
    cfg = as_evaluation(evaluation)
    if getattr(data, "task", "classification") == "regression":
        from .regression_run import check_regression_evaluation

        return check_regression_evaluation(cfg, data)
    from ..data.ood import load_ood_npz
    from ..data.shift import corruptions_for
    from ..data.tabular_shift import EXTRAPOLATION
    from ..metrics.ood import PREDICTOR_SCORES, SCORES

    gaussian = [s for s in cfg.scores if s not in SCORES + PREDICTOR_SCORES]
    if gaussian:
        raise ConfigError(f"evaluation.scores: {gaussian} score a Gaussian predictive (regression); a classifier's scores are "
                          f"{', '.join(SCORES + PREDICTOR_SCORES)}")
    if EXTRAPOLATION in cfg.ood:
        raise ConfigError(f"evaluation.ood: {EXTRAPOLATION} (test examples beyond a feature's training range) is evaluated for "
                          "regression data only")

    allowed = set(corruptions_for(data.input_shape))
    for name in resolve_corruptions(cfg, data):
        if name == MNIST1D_GENERATOR:
            if data.name != "mnist1d":
                raise ConfigError(f"evaluation.shift: {MNIST1D_GENERATOR} regenerates MNIST-1D test sets; the data is {data.name!r}")
        elif name not in allowed:
            kind = "images (C, H, W)" if len(data.input_shape) == 3 else "signals (C, L)" if len(data.input_shape) == 2 else "these inputs"
            raise ConfigError(f"evaluation.shift: corruption {name!r} does not apply to {kind} of shape {tuple(data.input_shape)}; "
                              f"valid: {', '.join(sorted(allowed))}")
    if data.val is None:
        if cfg.calibration in ("temperature", "vector"):
            raise ConfigError(f"evaluation.calibration: {cfg.calibration} is fitted on the validation split, and the data has none "
                              "(set the data's val_fraction > 0)")
        if cfg.conformal is not None:
            raise ConfigError("evaluation.conformal: the sets are calibrated on the validation split, and the data has none "
                              "(set the data's val_fraction > 0)")
    if cfg.held_out_classes is not None and data.info.get("held_out_classes") != cfg.held_out_classes:
        raise ConfigError(f"evaluation.ood: the data was not built without classes {cfg.held_out_classes} (prepare_data first)")
    for spec in cfg.ood:
        if isinstance(spec, dict) and "npz" in spec:
            load_ood_npz(spec["npz"], data.input_shape)
    return cfg


# --------------------------------------------------------------------------- parts

def _headline(probs: torch.Tensor, y: torch.Tensor, n_bins: int) -> dict[str, float]:
    """accuracy, error %, nll, brier, ece of one distribution ``(N, C)``."""
    from ..metrics.classification import accuracy, brier, ece, nll

    acc = float(accuracy(probs, y))
    return {"accuracy": acc, "error": 100.0 * (1.0 - acc), "nll": float(nll(probs, y)), "brier": float(brier(probs, y)),
            "ece": float(ece(probs, y, n_bins=n_bins))}


def _calibration(cfg: EvaluationConfig, val: Categorical, y_val: torch.Tensor, test: Categorical, y: torch.Tensor) -> tuple[dict[str, Any], torch.Tensor]:
    """Pool-then-calibrate (one T on the ensemble mean), calibrate-then-pool (T_m per member) and, as asked, vector scaling."""
    from ..metrics.calibration import fit_member_temperatures, fit_temperature, fit_vector_scaling, scale_probs

    pbar_val, pbar = val.pooled(), test.pooled()
    t = fit_temperature(pbar_val, y_val)
    pooled = scale_probs(pbar, t)
    temps = fit_member_temperatures(val.logits, y_val)
    tm = torch.tensor(temps, dtype=torch.float64).view(-1, 1, 1)
    member_then_pool = torch.softmax(test.logits.double() / tm, dim=-1).mean(0)
    out: dict[str, Any] = {
        "method": cfg.calibration or "temperature",
        "raw": _headline(pbar, y, cfg.n_bins),
        "pool_then_calibrate": {"temperature": t, **_headline(pooled, y, cfg.n_bins)},
        "calibrate_then_pool": {"temperatures": temps, **_headline(member_then_pool, y, cfg.n_bins)},
    }
    if cfg.calibration == "vector":
        w, b = fit_vector_scaling(pbar_val, y_val)
        vec = torch.softmax(pbar.double().clamp_min(1e-12).log() * w + b, dim=-1)
        out["vector"] = {"w": w.tolist(), "b": b.tolist(), **_headline(vec, y, cfg.n_bins)}
    return out, pooled


def thin_curve(values: torch.Tensor, points: int = 101) -> list[float]:
    """At most ``points`` evenly spaced values of a curve, its ends included (curves stored in a row)."""
    idx = torch.linspace(0, values.numel() - 1, min(points, values.numel())).round().long()
    return values[idx].tolist()


def _selective(scores: Mapping[str, torch.Tensor], correct: torch.Tensor) -> dict[str, Any]:
    from ..metrics.selective import risk_coverage, selective_summary

    out: dict[str, Any] = {"scores": {}, "curves": {}}
    for name, s in scores.items():
        out["scores"][name] = selective_summary(-s, correct)  # confidence = minus the uncertainty
        rc = risk_coverage(-s, correct)
        out["curves"][name] = {"coverage": thin_curve(rc["coverage"]), "risk": thin_curve(rc["risk"])}
    return out


def score_histogram(a: torch.Tensor, b: torch.Tensor, bins: int = 30) -> dict[str, list]:
    """Histograms of in- and out-of-distribution scores over one shared set of ``bins`` edges."""
    lo, hi = float(torch.minimum(a.min(), b.min())), float(torch.maximum(a.max(), b.max()))
    if hi <= lo:
        hi = lo + 1e-6
    edges = torch.linspace(lo, hi, bins + 1, dtype=torch.float64)
    return {"edges": edges.tolist(), "in": torch.histc(a.double(), bins, lo, hi).long().tolist(),
            "out": torch.histc(b.double(), bins, lo, hi).long().tolist()}


def _ood(cfg: EvaluationConfig, pred: Any, data: Data, tta: Sequence[Transform] | None, test_scores: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    from ..data.ood import ood_inputs, ood_name
    from ..metrics.ood import detection_metrics

    out: dict[str, Any] = {}
    for spec in cfg.ood:
        x = ood_inputs(data, spec, cfg.ood_size, seed=cfg.seed)
        scores = predictive(pred, x, tta).scores(cfg.scores)
        names = [k for k in cfg.scores if k in scores and k in test_scores]  # a predictor's own score only where it gives one
        out[ood_name(spec)] = {
            "size": int(x.shape[0]), "in_size": int(next(iter(test_scores.values())).numel()),
            "scores": {k: detection_metrics(test_scores[k], scores[k]) for k in names},
            "histograms": {k: score_histogram(test_scores[k], scores[k]) for k in names},
        }
    return out


def _shifted_mnist1d(data: Data, severity: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    from ..data.shift import mnist1d_shifted

    x, y = mnist1d_shifted(severity, num_examples=len(data.test), seed=seed)
    cmap = data.info.get("class_map")
    if cmap:  # held-out classes: keep the trained ones, in their new labels
        lookup = torch.full((int(data.info["num_classes_original"]),), -1, dtype=torch.int64)
        for old, new in cmap.items():
            lookup[int(old)] = int(new)
        keep = lookup[y] >= 0
        x, y = x[keep], lookup[y[keep]]
    return x, y


def _shift(cfg: EvaluationConfig, pred: Any, data: Data, tta: Sequence[Transform] | None, clean: dict[str, float],
           temperature: float | None) -> dict[str, Any]:
    from ..data.shift import Stats, corrupt
    from ..metrics.calibration import scale_probs

    assert cfg.shift is not None
    x_test, y_test = data.test.tensors()
    stats = Stats.of(x_test)
    per: dict[str, dict[str, list[float]]] = {}
    for name in resolve_corruptions(cfg, data):
        rows: dict[str, list[float]] = {"severity": [], "accuracy": [], "nll": [], "ece": [], "member_accuracy": []}
        if temperature is not None:
            rows.update(nll_calibrated=[], ece_calibrated=[])
        for sev in cfg.shift.severities:
            if name == MNIST1D_GENERATOR:
                x, y = _shifted_mnist1d(data, sev, cfg.shift.seed)
            else:
                x, y = corrupt(x_test, name, sev, seed=cfg.shift.seed, stats=stats), y_test
            probs = predictive(pred, x, tta).probs
            m = _headline(probs.mean(0), y, cfg.n_bins)
            rows["severity"].append(sev)
            for k in ("accuracy", "nll", "ece"):
                rows[k].append(m[k])
            rows["member_accuracy"].append(float((probs.argmax(-1) == y).double().mean()))
            if temperature is not None:
                cal = _headline(scale_probs(probs.mean(0), temperature), y, cfg.n_bins)
                rows["nll_calibrated"].append(cal["nll"])
                rows["ece_calibrated"].append(cal["ece"])
        per[name] = rows
    keys = [k for k in next(iter(per.values())) if k != "severity"] if per else []
    by_sev = {"severity": list(cfg.shift.severities)}
    for k in keys:
        by_sev[k] = [sum(r[k][i] for r in per.values()) / len(per) for i in range(len(cfg.shift.severities))]
    mean = {k: sum(by_sev[k]) / len(by_sev[k]) for k in keys}
    return {"corruptions": per, "by_severity": by_sev, "mean": mean, "clean": clean}


def _conformal(cfg: EvaluationConfig, val_probs: torch.Tensor, y_val: torch.Tensor, test_probs: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    from ..metrics.conformal import split_conformal

    assert cfg.conformal is not None
    c = cfg.conformal
    return {s: split_conformal(val_probs, y_val, test_probs, y, alpha=c.alpha, score=s, seed=cfg.seed, lam=c.lam, k_reg=c.k_reg)
            for s in c.scores}


# --------------------------------------------------------------------------- entry point

def evaluate_uncertainty(pred: Any, data: Data, evaluation: Any = None, *, tta: Sequence[Transform] | None = None,
                         test: Categorical | Gaussian | None = None, val: Categorical | Gaussian | None = None) -> dict[str, Any]:
    """Calibration, selective prediction, OOD detection, shift and conformal sets of ``pred`` on ``data``.

    A regression predictor (its ``readout`` a regression head, ``test`` a Gaussian, or regression
    ``data``) is evaluated by :func:`~ensemblekit.evaluation.regression_run.evaluate_regression_uncertainty`
    (the same schema; docs/evaluation.md, "Regression").

    Args:
        pred: a predictor (``Ensemble``, ``SharedEnsemble``, ``MCDropout``...): logits ``(M, B, C)`` when called.
        data: the data it was trained on (after :func:`prepare_data`: held-out classes removed).
        evaluation: an :class:`EvaluationConfig` or its mapping (default: calibration when there
            is a validation split, selective prediction, nothing else).
        tta: test-time transforms whose outputs are averaged (as in the method's validation).
        test, val: the predictives :func:`~ensemblekit.evaluation.forward.predictive` already gave on those splits
            (else computed).

    Returns:
        A JSON-able dict: ``format``, ``config``, ``hash``, and the parts asked for —
        ``calibration`` (``raw``, ``pool_then_calibrate``, ``calibrate_then_pool``, ``vector``),
        ``selective``, ``ood``, ``shift``, ``conformal`` (docs/evaluation.md).

    Example:
        >>> res = evaluate_uncertainty(method.ensemble_, data, {"ood": ["noise"], "shift": True})
        >>> res["ood"]["noise"]["scores"]["mi"]["auroc"], res["shift"]["mean"]["accuracy"]
    """
    readout = getattr(pred, "readout", None)
    if getattr(readout, "is_regression", False) or isinstance(test, Gaussian) or getattr(data, "task", None) == "regression":
        from .regression_run import evaluate_regression_uncertainty  # the Gaussian predictive's evaluation

        return evaluate_regression_uncertainty(pred, data, evaluation, tta=tta, test=test, val=val)  # type: ignore[arg-type]
    cfg = check_evaluation(evaluation, data)
    test = test if test is not None else predictive(pred, data.test, tta)
    y = data.test.tensors()[1].cpu()
    pbar = test.pooled()
    out: dict[str, Any] = {"format": EVALUATION_FORMAT, "config": cfg.model_dump(mode="json"), "hash": evaluation_hash(cfg)}
    temperature = None
    if data.val is not None and cfg.calibration != "none":
        val = val if val is not None else predictive(pred, data.val, tta)
        y_val = data.val.tensors()[1].cpu()
        out["calibration"], _ = _calibration(cfg, val, y_val, test, y)
        temperature = out["calibration"]["pool_then_calibrate"]["temperature"]
    need_scores = cfg.selective or cfg.ood
    scores = test.scores(cfg.scores) if need_scores else {}
    if cfg.selective:
        out["selective"] = _selective(scores, pbar.argmax(-1) == y)
    if cfg.ood:
        out["ood"] = _ood(cfg, pred, data, tta, scores)
    if cfg.shift is not None:
        out["shift"] = _shift(cfg, pred, data, tta, _headline(pbar, y, cfg.n_bins), temperature)
    if cfg.conformal is not None:
        val = val if val is not None else predictive(pred, data.val, tta)  # type: ignore[arg-type]
        out["conformal"] = _conformal(cfg, val.pooled(), data.val.tensors()[1].cpu(), pbar, y)  # type: ignore[union-attr]
    return out
