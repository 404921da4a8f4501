"""One evaluation of a predictor: its predictive on each split, then every metric of it.

:func:`evaluate` scores one split (the ``ensemblekit evaluate`` command, ``ek.evaluate``);
:func:`evaluate_predictor` is what the results path runs for every row: the test and
validation predictives (one :func:`~ensemblekit.evaluation.forward.predictive` pass each,
with the method's test-time transforms), their metrics
(:func:`~ensemblekit.metrics.summary.evaluate_probs`), the calibrated NLL of Ashukha et al.
(2020) and the uncertainty evaluation of the ``evaluation:`` block, all from those passes.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

from ..data.dataset import Data, Split
from ..metrics.calibration import calibrated_size_curve
from ..metrics.predictive import Categorical, Gaussian
from ..metrics.regression_summary import evaluate_gaussian
from ..metrics.summary import evaluate_probs
from .forward import Transform, predictive
from .run import evaluate_uncertainty

__all__ = ["Evaluated", "evaluate", "split_metrics", "evaluate_predictor"]


def evaluate(pred: Any, split: Split, n_bins: int = 15, batch_size: int = 1024, tta: Sequence[Transform] | None = None) -> dict[str, Any]:
    """Every split metric of a predictor: for classification accuracy, error %, NLL, Brier, ECE of the
    ensemble and of each member, diversity and the size curve; for a regression predictor (a
    Gaussian head, :class:`~ensemblekit.metrics.head_outputs.Readout`) RMSE, MAE, R², mixture NLL,
    CRPS, interval coverage and width, quantile calibration, in the targets' own units.

    Args:
        pred: a predictor (an :class:`~ensemblekit.ensemble.Ensemble`, any method's ``ensemble_``).
        split: e.g. ``data.test``.
        n_bins: ECE bins (default 15).
        tta: deterministic transforms whose predictions are averaged (see
            :func:`ensemblekit.data.augment.build_tta`); ``None``: the plain input.

    Returns:
        A JSON-able dict (see :func:`~ensemblekit.metrics.summary.evaluate_probs`, for regression
        :func:`~ensemblekit.metrics.regression_summary.evaluate_gaussian`).
    """
    pd = predictive(pred, split, tta, batch_size)
    return split_metrics(pd, split.tensors()[1].cpu(), n_bins)


def split_metrics(pd: Categorical | Gaussian, y: Any, n_bins: int = 15) -> dict[str, Any]:
    """The metrics of one split's predictive (Categorical or Gaussian) against its targets."""
    if isinstance(pd, Gaussian):
        return evaluate_gaussian(pd, y)
    return evaluate_probs(pd.probs, y, n_bins=n_bins)


class Evaluated(NamedTuple):
    """What :func:`evaluate_predictor` measured: the split metrics, the uncertainty evaluation and
    the test predictive they came from (for plots)."""

    test: dict[str, Any]
    val: dict[str, Any] | None
    uncertainty: dict[str, Any]
    test_predictive: Categorical | Gaussian


def evaluate_predictor(pred: Any, data: Data, evaluation: Any = None, *, tta: Sequence[Transform] | None = None,
                       tta_names: list[Any] | None = None) -> Evaluated:
    """Test and validation metrics of a predictor and its uncertainty evaluation, from one pass per split.

    With a validation split the test metrics also hold ``calibrated``: for classification the
    temperature fitted on validation and the test NLL after temperature scaling, for the whole
    ensemble and for the ensembles of its first 1..M members (Ashukha et al. 2020's calibrated
    log-likelihood); for regression the variance scale fitted on validation (every member's
    variance times one factor, the mixture NLL minimised) and the test metrics after it.
    ``uncertainty`` is :func:`~ensemblekit.evaluation.run.evaluate_uncertainty` of ``evaluation``.
    Each split's metrics carry ``tta``: the names of the test-time transforms used.
    """
    names = list(tta_names or [])
    test_pd = predictive(pred, data.test, tta)
    y_test = data.test.tensors()[1].cpu()
    test = {**split_metrics(test_pd, y_test), "tta": names}
    val_pd = predictive(pred, data.val, tta) if data.val is not None else None
    uncertainty = evaluate_uncertainty(pred, data, evaluation, tta=tta, test=test_pd, val=val_pd)
    if val_pd is None:
        return Evaluated(test, None, uncertainty, test_pd)
    y_val = data.val.tensors()[1].cpu()  # type: ignore[union-attr]
    test["calibrated"] = _calibrated(val_pd, y_val, test_pd, y_test)
    return Evaluated(test, {**split_metrics(val_pd, y_val), "tta": names}, uncertainty, test_pd)


def _calibrated(val_pd: Categorical | Gaussian, y_val: Any, test_pd: Categorical | Gaussian, y_test: Any) -> dict[str, Any]:
    """The test metrics after the post-hoc scaling fitted on validation (temperature, or variance scale)."""
    if isinstance(test_pd, Gaussian):
        from ..metrics.regression_calibration import fit_variance_scale, scale_variance

        c = fit_variance_scale(val_pd, y_val)
        scaled = evaluate_gaussian(scale_variance(test_pd, c), y_test)
        scaled.pop("size_curve", None)
        return {"variance_scale": c, **scaled}
    curve = calibrated_size_curve(val_pd.probs, y_val, test_pd.probs, y_test)  # type: ignore[union-attr]
    return {"temperature": curve["temperature"][-1], "nll": curve["calibrated_nll"][-1], "size_curve": curve}
