"""Evaluation beyond in-distribution accuracy: calibration, selective prediction, OOD detection, shift, conformal sets.

``evaluation:`` in a config (:class:`EvaluationConfig`) selects what runs;
:func:`evaluate_uncertainty` computes it for any predictor. docs/evaluation.md has the
definitions and the results schema.
"""

from __future__ import annotations

from .config import ConformalConfig, EvaluationConfig, ShiftConfig
from .run import check_evaluation, evaluate_uncertainty, predict_outputs, prepare_data

__all__ = ["EvaluationConfig", "ShiftConfig", "ConformalConfig", "evaluate_uncertainty", "predict_outputs", "prepare_data", "check_evaluation"]
