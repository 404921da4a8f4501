"""Evaluation: the one prediction pass over a predictor and everything measured from it.

Owns: the pass (:mod:`.forward`: members, batches, devices, test-time augmentation) that
yields a :class:`~ensemblekit.metrics.predictive.Categorical`; one split's metrics and the
results path's evaluation (:mod:`.evaluate`); calibration, selective prediction, OOD
detection, shift and conformal sets (:mod:`.run`, configured by ``evaluation:``,
:class:`EvaluationConfig`); predictions written to files (:mod:`.predict`).
docs/evaluation.md has the definitions and the results schema.

May import: ``errors``, ``schema``, ``hashing``, ``serialization``, ``data``, ``metrics``.
It knows predictors only through their inference logits (``pred.logits``), never their classes.
"""

from __future__ import annotations

from .config import ConformalConfig, EvaluationConfig, ShiftConfig
from .evaluate import Evaluated, evaluate, evaluate_predictor
from .forward import member_logits, predictive
from .run import check_evaluation, evaluate_uncertainty, prepare_data

__all__ = ["EvaluationConfig", "ShiftConfig", "ConformalConfig", "Evaluated", "evaluate", "evaluate_predictor", "evaluate_uncertainty",
           "member_logits", "predictive", "prepare_data", "check_evaluation"]
