"""The ``evaluation:`` block: what is measured beyond in-distribution accuracy (valid in ``train``, ``compare``, ``evaluate``).

```yaml
evaluation:
  calibration: temperature          # temperature | vector | none (default: temperature when there is a validation split)
  shift: {corruptions: [gaussian_noise, time_shift], severities: [1, 2, 3, 4, 5]}   # or `shift: true` for the default suite
  ood: [{held_out_classes: [7, 8, 9]}, noise, {npz: my_ood.npz}]
  selective: true
  conformal: {alpha: 0.1, scores: [aps, raps]}                                        # or `conformal: true`
  scores: [msp, entropy, mi, energy, max_logit]   # the uncertainty scores of OOD detection and selective prediction
```

Regression data reads the same block (``evaluation/regression_run.py``): Gaussian scores (``std``,
``epistemic_std``, ...), the tabular corruptions of ``data/tabular_shift.py`` and the OOD set
``extrapolation`` are accepted here and refused for classification by ``check_evaluation``.

Held-out classes change the training data (the classes are removed from every split and the
rest relabelled): they are part of what a run trains on, the rest of the block is not (a
finished run is re-evaluated, not retrained, when only the rest changes).
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Literal

from pydantic import Field, field_validator

from ..errors import ConfigError
from ..schema import StrictModel

__all__ = ["ShiftConfig", "ConformalConfig", "EvaluationConfig", "MNIST1D_GENERATOR", "evaluation_hash", "as_evaluation"]

MNIST1D_GENERATOR = "mnist1d_generator"  # the MNIST-1D test set regenerated with larger noise, shear and scale


class ShiftConfig(StrictModel):
    """Corruptions of the test split at severities 1..5 (``corruptions``: default, the suite for the data's kind)."""

    corruptions: list[str] | None = None
    severities: list[int] = Field(default_factory=lambda: [1, 2, 3, 4, 5], min_length=1)
    seed: int = 0

    @field_validator("corruptions")
    @classmethod
    def _names(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("corruptions must name at least one corruption (omit it for the default suite)")
        from ..data.shift import CORRUPTIONS
        from ..data.tabular_shift import TABULAR_SUITE

        for name in v:
            if name != MNIST1D_GENERATOR and name not in TABULAR_SUITE:  # the tabular suite: regression's (F,) inputs
                CORRUPTIONS.get(name)  # an unknown name lists the valid ones
        if len(set(v)) != len(v):
            raise ValueError(f"corruptions repeat a name: {v}")
        return v

    @field_validator("severities")
    @classmethod
    def _severities(cls, v: list[int]) -> list[int]:
        bad = [s for s in v if not 1 <= s <= 5]
        if bad:
            raise ValueError(f"severities must be in 1..5, got {bad}")
        return sorted(set(v))


class ConformalConfig(StrictModel):
    """Split conformal prediction sets calibrated on the validation split."""

    alpha: float = Field(0.1, gt=0, lt=1)
    scores: list[Literal["thr", "aps", "raps"]] = Field(default_factory=lambda: ["aps"], min_length=1)
    lam: float = Field(0.01, ge=0)
    k_reg: int = Field(1, ge=0)


def _truthy_block(v: Any) -> Any:
    if v is True:
        return {}
    if v is False:
        return None
    return v


class EvaluationConfig(StrictModel):
    """What to evaluate (see the module docstring); the defaults cost almost nothing."""

    calibration: Literal["temperature", "vector", "none"] | None = None
    shift: ShiftConfig | None = None
    ood: list[Any] = Field(default_factory=list)
    ood_size: int | None = Field(None, ge=1)
    selective: bool = True
    conformal: ConformalConfig | None = None
    scores: list[str] = Field(default_factory=lambda: ["msp", "entropy", "mi", "energy", "max_logit"], min_length=1)
    seed: int = 0
    n_bins: int = Field(15, ge=1)

    @field_validator("shift", "conformal", mode="before")
    @classmethod
    def _blocks(cls, v: Any) -> Any:
        return _truthy_block(v)

    @field_validator("ood", mode="before")
    @classmethod
    def _ood_list(cls, v: Any) -> Any:
        if v is None:
            return []
        return [v] if isinstance(v, (str, dict)) else v

    @field_validator("ood")
    @classmethod
    def _ood(cls, v: list[Any]) -> list[Any]:
        from ..data.ood import OOD_SETS, ood_name
        from ..data.tabular_shift import EXTRAPOLATION

        out: list[Any] = []
        for spec in v:
            if isinstance(spec, str):
                if spec.lower() != EXTRAPOLATION:  # regression only: the test examples beyond the training range
                    OOD_SETS.get(spec)
                out.append(spec.lower())
                continue
            if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in ("held_out_classes", "npz"):
                raise ValueError(f"an OOD set is a name ({', '.join(OOD_SETS.names())}), {{held_out_classes: [...]}} or {{npz: path}}; got {spec!r}")
            if "held_out_classes" in spec:
                classes = spec["held_out_classes"]
                if not isinstance(classes, list) or not classes or any(isinstance(c, bool) or not isinstance(c, int) for c in classes):
                    raise ValueError(f"held_out_classes must be a non-empty list of class indices, got {classes!r}")
                if len(set(classes)) != len(classes):
                    raise ValueError(f"held_out_classes repeats a class: {classes}")
                out.append({"held_out_classes": sorted(classes)})
            else:
                if not isinstance(spec["npz"], str) or not spec["npz"]:
                    raise ValueError(f"npz must be a file path, got {spec['npz']!r}")
                out.append({"npz": spec["npz"]})
        names = [ood_name(s) for s in out]
        if len(set(names)) != len(names):
            raise ValueError(f"OOD sets repeat: {names}")
        if sum(isinstance(s, dict) and "held_out_classes" in s for s in out) > 1:
            raise ValueError("at most one held_out_classes entry (a run trains on one set of classes)")
        return out

    @field_validator("scores")
    @classmethod
    def _scores(cls, v: list[str]) -> list[str]:
        from ..metrics.ood import PREDICTOR_SCORES, SCORES
        from ..metrics.predictive import GAUSSIAN_SCORES

        valid = SCORES + PREDICTOR_SCORES + GAUSSIAN_SCORES  # classification's, then regression's (each task refuses the other's)
        bad = [s for s in v if s not in valid]
        if bad:
            raise ValueError(f"unknown uncertainty score(s) {bad}; valid: {', '.join(valid)}")
        if len(set(v)) != len(v):
            raise ValueError(f"scores repeat: {v}")
        return v

    @property
    def held_out_classes(self) -> list[int] | None:
        """The classes removed from training (``None``: none)."""
        for spec in self.ood:
            if isinstance(spec, dict) and "held_out_classes" in spec:
                return list(spec["held_out_classes"])
        return None


def as_evaluation(value: Any) -> EvaluationConfig:
    """``value`` (an EvaluationConfig, a mapping or ``None``) as a validated EvaluationConfig."""
    if isinstance(value, EvaluationConfig):
        return value
    from ..schema import parse_config

    return parse_config(dict(value or {}), EvaluationConfig)


METRICS_VERSION = 2
"""Bumped whenever a metric's definition changes (2: a temperature is not fitted on a validation
split without errors), so that ``compare`` evaluates stored ensembles again instead of
reporting numbers computed by the old definition."""


def evaluation_hash(cfg: EvaluationConfig) -> str:
    """A hash of what the evaluation computes: the block, the bytes of every OOD ``.npz`` it
    reads and :data:`METRICS_VERSION`."""
    from ..hashing import spec_hash

    files = {}
    for spec in cfg.ood:
        if isinstance(spec, dict) and "npz" in spec:
            path = spec["npz"]
            if not os.path.isfile(path):
                raise ConfigError(f"OOD npz file not found: {path}")
            with open(path, "rb") as f:
                files[path] = hashlib.sha1(f.read()).hexdigest()
    return spec_hash({"evaluation": cfg.model_dump(mode="json"), "files": files, "metrics": METRICS_VERSION})
