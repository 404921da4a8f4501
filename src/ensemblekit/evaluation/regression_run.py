"""Evaluate a regression predictor's uncertainty: variance scaling, selective regression, OOD from the predicted std, shift, conformal intervals.

The regression half of :func:`ensemblekit.evaluation.run.evaluate_uncertainty`, which hands
over to :func:`evaluate_regression_uncertainty` when the predictive is a
:class:`~ensemblekit.metrics.predictive.Gaussian`. It reads the same ``evaluation:`` block
and returns the same top-level schema (``ensemblekit.evaluation/1``, docs/evaluation.md,
"Regression"). The ensemble's predictive is the uniform mixture of the members' Gaussians,
in the targets' units; every metric is the mixture's (:mod:`ensemblekit.metrics.regression`).

How the block reads for regression:

- ``calibration``: ``temperature`` (or unset, with a validation split) is its analogue,
  variance scaling: one factor on every member's variance fitted on the validation split
  (pool, then scale), next to one factor per member (scale, then pool); ``vector`` is refused.
- ``scores``: the Gaussian scores (:data:`~ensemblekit.metrics.predictive.GAUSSIAN_SCORES`);
  left unset (or at the classification default), :data:`REGRESSION_SCORES`.
- ``shift``: flat inputs ``(F,)`` get the tabular suite (:mod:`ensemblekit.data.tabular_shift`);
  the position-free ``gaussian_noise`` and ``amplitude_scale`` may be named too.
- ``ood``: ``noise`` (uniform over the training box for flat inputs), ``constant``,
  ``permuted``, ``{npz: ...}``, and ``extrapolation`` (the test examples beyond the training
  range of one feature against the rest); ``held_out_classes`` is refused.
- ``conformal``: normalised split-conformal intervals at ``alpha`` (``scores``, ``lam``,
  ``k_reg`` are classification settings and are not read).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from ..data.dataset import Data
from ..data.tabular_shift import EXTRAPOLATION, TABULAR_SUITE, FeatureStats, extrapolation_split, tabular_corrupt, uniform_box
from ..errors import ConfigError, DataError
from ..metrics.predictive import GAUSSIAN_SCORES, Gaussian
from .config import EvaluationConfig, as_evaluation, evaluation_hash
from .forward import Transform, predictive
from .run import EVALUATION_FORMAT, score_histogram, thin_curve

__all__ = ["REGRESSION_SCORES", "SHIFT_KEYS", "regression_scores", "resolve_regression_corruptions",
           "check_regression_evaluation", "evaluate_regression_uncertainty"]

REGRESSION_SCORES = ("std", "epistemic_std", "aleatoric_std")
"""The scores of a regression evaluation whose block sets none: total, epistemic and aleatoric predicted std."""

SHIFT_KEYS = ("rmse", "nll", "crps", "picp95", "mpiw95", "mean_std")
"""The metrics of every shift row (and of ``clean``)."""

_LEVELS = (0.5, 0.9, 0.95)


def regression_scores(cfg: EvaluationConfig) -> list[str]:
    """The uncertainty scores a regression evaluation of ``cfg`` uses (its ``scores``, or :data:`REGRESSION_SCORES`
    when they were not set or are the classification default).

    Raises:
        ConfigError: a classification-only score, in one line.
    """
    default = EvaluationConfig.model_fields["scores"].default_factory()  # type: ignore[misc]
    if "scores" not in cfg.model_fields_set or list(cfg.scores) == list(default):
        return list(REGRESSION_SCORES)
    bad = [s for s in cfg.scores if s not in GAUSSIAN_SCORES]
    if bad:
        raise ConfigError(f"evaluation.scores: {bad} score class probabilities (classification); a regression predictive's "
                          f"scores are {', '.join(GAUSSIAN_SCORES)}")
    return list(cfg.scores)


def resolve_regression_corruptions(cfg: EvaluationConfig, data: Data) -> list[str]:
    """The corruptions the shift suite runs on regression ``data`` (``[]`` without a ``shift`` block)."""
    if cfg.shift is None:
        return []
    if cfg.shift.corruptions is not None:
        return list(cfg.shift.corruptions)
    if len(data.input_shape) == 1:
        return list(TABULAR_SUITE)
    from ..data.shift import default_corruptions

    return list(default_corruptions(data.input_shape))


def _check_ood(cfg: EvaluationConfig, data: Data) -> None:
    from ..data.ood import load_ood_npz

    for spec in cfg.ood:
        if isinstance(spec, dict) and "held_out_classes" in spec:
            raise ConfigError("evaluation.ood: held_out_classes removes classes, and regression data has none "
                              f"(valid for regression: noise, constant, permuted, {EXTRAPOLATION}, {{npz: path}})")
        if isinstance(spec, dict) and "npz" in spec:
            load_ood_npz(spec["npz"], data.input_shape)
        if spec == EXTRAPOLATION:
            if len(data.input_shape) != 1:
                raise ConfigError(f"evaluation.ood: {EXTRAPOLATION} needs flat features (F,), the inputs have shape "
                                  f"{tuple(data.input_shape)}")
            try:
                extrapolation_split(data.train.tensors()[0], data.test.tensors()[0])
            except DataError as exc:
                raise DataError(f"evaluation.ood: {EXTRAPOLATION}: {exc} in {data.name!r} (drop it from the block)") from None


def check_regression_evaluation(evaluation: Any, data: Data) -> EvaluationConfig:
    """Everything about ``evaluation`` that depends on regression ``data``, checked before anything runs or is written.

    Raises:
        ConfigError: classification-only scores, vector scaling or held-out classes; a
            corruption that does not apply to the inputs; variance scaling or conformal
            intervals without a validation split; ``extrapolation`` on inputs that are not flat.
        DataError: an OOD ``.npz`` that does not fit the inputs; ``extrapolation`` when no test
            example lies beyond the training range of any feature.
    """
    from ..data.shift import corruptions_for

    cfg = as_evaluation(evaluation)
    regression_scores(cfg)
    flat = len(data.input_shape) == 1
    allowed = (set(TABULAR_SUITE) if flat else set()) | set(corruptions_for(data.input_shape))
    for name in resolve_regression_corruptions(cfg, data):
        if name not in allowed:
            raise ConfigError(f"evaluation.shift: corruption {name!r} does not apply to regression inputs of shape "
                              f"{tuple(data.input_shape)}; valid: {', '.join(sorted(allowed))}")
    if cfg.calibration == "vector":
        raise ConfigError("evaluation.calibration: vector scaling rescales class logits; a regression predictive is "
                          "calibrated by variance scaling (calibration: temperature, the default)")
    if data.val is None:
        if cfg.calibration == "temperature":
            raise ConfigError("evaluation.calibration: variance scaling is fitted on the validation split, and the data has "
                              "none (set the data's val_fraction > 0)")
        if cfg.conformal is not None:
            raise ConfigError("evaluation.conformal: the intervals are calibrated on the validation split, and the data has "
                              "none (set the data's val_fraction > 0)")
    _check_ood(cfg, data)
    return cfg


# --------------------------------------------------------------------------- parts

def _headline(pd: Gaussian, y: torch.Tensor) -> dict[str, float]:
    """The mixture's rmse, mae, nll, crps, picp / mpiw at 50, 90, 95%, quantile calibration error and mean predicted std."""
    from ..metrics.regression import crps_mixture, mae, mixture_nll, rmse
    from ..metrics.regression_calibration import coverage_width, quantile_calibration

    cw = coverage_width(pd, y, _LEVELS)
    out = {"rmse": float(rmse(pd, y)), "mae": float(mae(pd, y)), "nll": float(mixture_nll(pd, y)),
           "crps": float(crps_mixture(pd, y))}
    for i, lv in enumerate(_LEVELS):
        out[f"picp{round(100 * lv)}"] = float(cw["picp"][i])
        out[f"mpiw{round(100 * lv)}"] = float(cw["mpiw"][i])
    out["quantile_calibration_error"] = float(quantile_calibration(pd, y)["error"])
    out["mean_std"] = float(pd.scores("std")["std"].mean())
    return out


def _calibration(val: Gaussian, y_val: torch.Tensor, test: Gaussian, y: torch.Tensor) -> tuple[dict[str, Any], float]:
    """Pool, then scale (one factor on the mixture, fitted on the validation NLL) and scale, then pool (one per member)."""
    from ..metrics.regression_calibration import fit_variance_scale, scale_variance

    c = fit_variance_scale(val, y_val)
    scales = [fit_variance_scale(val.members([m]), y_val) for m in range(val.num_members)]
    per = torch.tensor(scales, dtype=test.var.dtype).view(-1, *([1] * (test.var.dim() - 1)))
    return {
        "method": "variance_scaling",
        "raw": _headline(test, y),
        "variance_scaled": {"scale": c, **_headline(scale_variance(test, c), y)},
        "scale_then_pool": {"scales": scales, **_headline(Gaussian(test.mean, test.var * per), y)},
    }, c


def _selective(scores: Mapping[str, torch.Tensor], mean: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    from ..metrics.selective_regression import (oracle_risk_coverage, regression_risk_coverage, selective_regression_summary,
                                                squared_errors)

    errors = squared_errors(mean, y)
    oracle = oracle_risk_coverage(errors)
    out: dict[str, Any] = {"risk": "mse", "scores": {}, "curves": {},
                           "oracle": {"aurc": float(oracle["risk"].mean()), "coverage": thin_curve(oracle["coverage"]),
                                      "risk": thin_curve(oracle["risk"])}}
    for name, s in scores.items():
        out["scores"][name] = selective_regression_summary(s, mean, y)
        rc = regression_risk_coverage(s, errors)
        out["curves"][name] = {"coverage": thin_curve(rc["coverage"]), "risk": thin_curve(rc["risk"])}
    return out


def _detection(s_in: Mapping[str, torch.Tensor], s_out: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    from ..metrics.ood import detection_metrics

    return {"size": int(next(iter(s_out.values())).numel()), "in_size": int(next(iter(s_in.values())).numel()),
            "scores": {k: detection_metrics(s_in[k], s_out[k]) for k in s_in},
            "histograms": {k: score_histogram(s_in[k], s_out[k]) for k in s_in}}


def _ood(cfg: EvaluationConfig, pred: Any, data: Data, tta: Sequence[Transform] | None, test_scores: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """One entry per OOD set: detection of the set against the test split by each score (higher = more OOD)."""
    from ..data.ood import ood_inputs, ood_name

    x_train, x_test = data.train.tensors()[0], data.test.tensors()[0]
    names = list(test_scores)
    out: dict[str, Any] = {}
    for spec in cfg.ood:
        if spec == EXTRAPOLATION:
            ex = extrapolation_split(x_train, x_test)
            inside = {k: v[~ex.outside] for k, v in test_scores.items()}
            outside = {k: v[ex.outside] for k, v in test_scores.items()}
            out[EXTRAPOLATION] = {"feature": ex.feature, "low": ex.low, "high": ex.high, **_detection(inside, outside)}
            continue
        if spec == "noise" and x_train.dim() == 2:
            x = uniform_box(x_train, int(cfg.ood_size or len(data.test)), seed=cfg.seed)
        else:
            x = ood_inputs(data, spec, cfg.ood_size, seed=cfg.seed)
        out[ood_name(spec)] = _detection(test_scores, _gaussian(predictive(pred, x, tta)).scores(names))
    return out


def _shifted(name: str, x_test: torch.Tensor, severity: int, seed: int, fstats: FeatureStats | None, stats: Any) -> torch.Tensor:
    if name in TABULAR_SUITE:
        assert fstats is not None
        return tabular_corrupt(x_test, name, severity, fstats, seed=seed)
    from ..data.shift import corrupt

    return corrupt(x_test, name, severity, seed=seed, stats=stats)


def _shift(cfg: EvaluationConfig, pred: Any, data: Data, tta: Sequence[Transform] | None, clean: dict[str, float],
           scale: float | None) -> dict[str, Any]:
    """Per corruption x severity: the mixture's rmse, nll, crps, picp95, mpiw95, mean std (and with variance scaling,
    nll / crps / picp95 of the scaled predictive); their mean over corruptions per severity, and over severities."""
    from ..data.shift import Stats
    from ..metrics.regression_calibration import scale_variance

    assert cfg.shift is not None
    x_test, y = data.test.tensors()
    fstats = FeatureStats.of(data.train.tensors()[0]) if x_test.dim() == 2 else None
    stats = Stats.of(x_test)
    per: dict[str, dict[str, list[float]]] = {}
    for name in resolve_regression_corruptions(cfg, data):
        rows: dict[str, list[float]] = {"severity": [], **{k: [] for k in SHIFT_KEYS}}
        if scale is not None:
            rows.update(nll_calibrated=[], crps_calibrated=[], picp95_calibrated=[])
        for sev in cfg.shift.severities:
            pd = _gaussian(predictive(pred, _shifted(name, x_test, sev, cfg.shift.seed, fstats, stats), tta))
            m = _headline(pd, y)
            rows["severity"].append(sev)
            for k in SHIFT_KEYS:
                rows[k].append(m[k])
            if scale is not None:
                cal = _headline(scale_variance(pd, scale), y)
                for k in ("nll", "crps", "picp95"):
                    rows[f"{k}_calibrated"].append(cal[k])
        per[name] = rows
    keys = [k for k in next(iter(per.values())) if k != "severity"] if per else []
    by_sev: dict[str, list] = {"severity": list(cfg.shift.severities)}
    for k in keys:
        by_sev[k] = [sum(r[k][i] for r in per.values()) / len(per) for i in range(len(cfg.shift.severities))]
    mean = {k: sum(by_sev[k]) / len(by_sev[k]) for k in keys}
    return {"corruptions": per, "by_severity": by_sev, "mean": mean, "clean": {k: clean[k] for k in SHIFT_KEYS}}


def _conformal(cfg: EvaluationConfig, val: Gaussian, y_val: torch.Tensor, test: Gaussian, y: torch.Tensor) -> dict[str, Any]:
    """Normalised split-conformal intervals, and the mixture's own central interval at ``1 - alpha`` for reference."""
    from ..metrics.conformal_regression import normalized_conformal
    from ..metrics.regression_calibration import coverage_width

    assert cfg.conformal is not None
    alpha = cfg.conformal.alpha
    (mu_v, var_v), (mu, var) = val.pooled(), test.pooled()
    cw = coverage_width(test, y, 1 - alpha)
    return {"normalized": normalized_conformal(mu_v, var_v.sqrt(), y_val, mu, var.sqrt(), y, alpha=alpha),
            "mixture_interval": {"level": 1 - alpha, "coverage": float(cw["picp"]), "mean_width": float(cw["mpiw"])}}


def _gaussian(pd: Any) -> Gaussian:
    if not isinstance(pd, Gaussian):
        raise ConfigError(f"a regression evaluation needs a Gaussian predictive (a predictor whose readout is a regression "
                          f"head), got a {getattr(pd, 'kind', type(pd).__name__)} one")
    return pd


# --------------------------------------------------------------------------- entry point

def evaluate_regression_uncertainty(pred: Any, data: Data, evaluation: Any = None, *, tta: Sequence[Transform] | None = None,
                                    test: Gaussian | None = None, val: Gaussian | None = None) -> dict[str, Any]:
    """Variance scaling, selective regression, OOD detection, shift and conformal intervals of ``pred`` on ``data``.

    Args:
        pred: a predictor whose ``readout`` is a regression readout (its predictive a Gaussian).
        data: the regression data it was trained on.
        evaluation: an :class:`EvaluationConfig` or its mapping (default: variance scaling when
            there is a validation split, selective regression, nothing else).
        tta: test-time transforms whose outputs are averaged.
        test, val: the Gaussian predictives already computed on those splits (else computed).

    Returns:
        A JSON-able dict: ``format``, ``task`` (``"regression"``), ``config``, ``hash``, and the
        parts asked for: ``calibration`` (``raw``, ``variance_scaled``, ``scale_then_pool``),
        ``selective``, ``ood``, ``shift``, ``conformal`` (``normalized``, ``mixture_interval``);
        docs/evaluation.md, "Regression".

    Raises:
        ConfigError, DataError: as :func:`check_regression_evaluation`; a predictive that is not Gaussian.

    Example:
        >>> res = evaluate_regression_uncertainty(ens, data, {"ood": ["noise", "extrapolation"], "shift": True, "conformal": True})
        >>> res["ood"]["extrapolation"]["scores"]["epistemic_std"]["auroc"], res["conformal"]["normalized"]["coverage"]
    """
    cfg = check_regression_evaluation(evaluation, data)
    names = regression_scores(cfg)
    test = _gaussian(test if test is not None else predictive(pred, data.test, tta))
    y = data.test.tensors()[1].cpu()
    out: dict[str, Any] = {"format": EVALUATION_FORMAT, "task": "regression", "config": cfg.model_dump(mode="json"),
                           "hash": evaluation_hash(cfg)}
    scale = None
    if data.val is not None and (cfg.calibration != "none" or cfg.conformal is not None):
        val = _gaussian(val if val is not None else predictive(pred, data.val, tta))
    if data.val is not None and cfg.calibration != "none":
        out["calibration"], scale = _calibration(val, data.val.tensors()[1].cpu(), test, y)  # type: ignore[arg-type]
    scores = test.scores(names) if cfg.selective or cfg.ood else {}
    if cfg.selective:
        out["selective"] = _selective(scores, test.pooled()[0], y)
    if cfg.ood:
        out["ood"] = _ood(cfg, pred, data, tta, scores)
    if cfg.shift is not None:
        out["shift"] = _shift(cfg, pred, data, tta, _headline(test, y), scale)
    if cfg.conformal is not None:
        out["conformal"] = _conformal(cfg, val, data.val.tensors()[1].cpu(), test, y)  # type: ignore[arg-type, union-attr]
    return out
