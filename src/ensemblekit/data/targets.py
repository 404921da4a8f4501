"""Features and targets as tensors, and the task (classification or regression) they imply.

Classification targets are integer class indices ``(N,)``; regression targets are real
values ``(N,)`` or ``(N, D)`` (Lakshminarayanan, Pritzel and Blundell, "Simple and Scalable
Predictive Uncertainty Estimation using Deep Ensembles", NeurIPS 2017, fit a Gaussian to
each). The task is stated, or inferred only where the targets leave no doubt
(:func:`infer_task`; the rules are in ``docs/architecture.md``, "Regression data").
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, DataError

__all__ = ["TASKS", "check_task", "numeric_array", "as_features", "as_labels", "as_regression_targets", "infer_task", "as_targets"]

#: The tasks a :class:`~ensemblekit.data.dataset.Data` can hold.
TASKS = ("classification", "regression")


def check_task(task: Any) -> str:
    """``task`` if it is one of :data:`TASKS`.

    Raises:
        ConfigError: any other value.
    """
    if task not in TASKS:
        raise ConfigError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    return str(task)


def numeric_array(a: Any, name: str) -> Any:
    """``a`` as something torch can hold, refusing strings, objects and other non-numbers by name."""
    if isinstance(a, torch.Tensor):
        return a
    arr = np.asarray(a)
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{name} must be numeric, got numpy dtype {arr.dtype} ({arr.dtype.kind!r}: strings, objects or dates)")
    return arr


def as_features(a: Any, name: str) -> torch.Tensor:
    """Features as a float32 tensor."""
    t = torch.as_tensor(numeric_array(a, name))
    if t.dtype == torch.bool or not (t.is_floating_point() or t.dtype in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)):
        raise DataError(f"{name} must be numeric, got dtype {t.dtype}")
    return t.to(torch.float32)


def _non_finite(t: torch.Tensor) -> int:
    return int((~torch.isfinite(t)).sum()) if t.is_floating_point() else 0


def as_labels(a: Any, name: str) -> torch.Tensor:
    """Class indices as an int64 vector ``(N,)``; whole-valued floats are accepted."""
    t = torch.as_tensor(numeric_array(a, name))
    if t.dim() != 1:
        raise DataError(f"{name} must be a 1-D vector of class indices, got shape {tuple(t.shape)}")
    if t.is_floating_point():
        if not torch.isfinite(t).all() or not torch.equal(t, t.round()):
            raise DataError(f"{name} must hold integer class indices, got non-integer values (NaN, inf or fractions); "
                            "for real-valued targets use task='regression'")
    elif t.dtype == torch.bool or t.is_complex():
        raise DataError(f"{name} must hold integer class indices, got dtype {t.dtype}")
    if t.numel() and int(t.min()) < 0:
        raise DataError(f"{name}: labels must be in 0..C-1, found a negative value {int(t.min())}")
    return t.to(torch.int64)


def as_regression_targets(a: Any, name: str) -> torch.Tensor:
    """Real-valued targets as float32, shape ``(N,)`` or ``(N, D)``, all finite."""
    t = torch.as_tensor(numeric_array(a, name))
    if t.dtype == torch.bool or t.is_complex():
        raise DataError(f"{name}: regression targets must be real numbers, got dtype {t.dtype}")
    if t.dim() not in (1, 2) or (t.dim() == 2 and t.shape[1] == 0):
        raise DataError(f"{name}: regression targets must have shape (N,) or (N, D) with D >= 1, got {tuple(t.shape)}")
    bad = _non_finite(t)
    if bad:
        raise DataError(f"{name}: {bad} regression target value(s) are NaN or infinite")
    return t.to(torch.float32)


def infer_task(y: Any, *others: tuple[str, Any]) -> str:
    """The task the training targets ``y`` imply (with the other splits' ``(name, targets)`` as evidence).

    Integer ``y`` -> ``"classification"``; floating-point targets of which some value is not
    a whole number -> ``"regression"``; floating-point targets that are all whole numbers are
    ambiguous (class indices read from a CSV, or counts?) and refused.

    Raises:
        DataError: NaN/inf targets, or the ambiguous case (asking to state the task).

    Example:
        >>> infer_task(np.array([0, 1, 2])), infer_task(np.array([0.5, 1.0]))
        ('classification', 'regression')
    """
    t = torch.as_tensor(numeric_array(y, "y"))
    if not t.is_floating_point():
        return "classification"
    found = False
    for name, v in (("y", t), *others):
        if v is None:
            continue
        v = torch.as_tensor(numeric_array(v, name))
        if not v.is_floating_point():
            continue
        bad = _non_finite(v)
        if bad:
            raise DataError(f"{name}: {bad} target value(s) are NaN or infinite")
        found = found or not torch.equal(v, v.round())
    if found:
        return "regression"
    raise DataError("y holds floating-point values that are all whole numbers (class indices or real-valued targets?); "
                    "state the task: task='classification' or task='regression'")


def as_targets(a: Any, name: str, task: str) -> torch.Tensor:
    """Targets of ``task``: :func:`as_labels` for classification, :func:`as_regression_targets` for regression."""
    return as_regression_targets(a, name) if task == "regression" else as_labels(a, name)
