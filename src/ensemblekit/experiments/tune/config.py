"""Tune config: search space, samplers, pruning, coarse-to-fine settings."""

from __future__ import annotations

import math
from typing import Any, Literal, Mapping

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState
from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from ...config import RunConfig, set_paths
from ...data.registry import DATASETS
from ...errors import ConfigError
from ...schema import format_validation_error
from ...schema import StrictModel
from ...schema.params import SCALARS, ParamSpec, encode_choice

__all__ = ["ParamSpec", "PruneConfig", "RefineConfig", "SearchSpace", "TuneConfig"]


METRIC_KEY = {"val_acc": "accuracy", "val_nll": "nll"}
_DIRECTION = {"val_acc": "maximize", "val_nll": "minimize"}
STAGES = ("coarse", "refine")


# ---------------------------------------------------------------------- config
class PruneConfig(StrictModel):
    """``prune: true`` or ``{startup_trials: 5, warmup_epochs: 0}`` (optuna's MedianPruner):
    stop a trial whose validation metric at an epoch is worse than the median of earlier
    trials at that epoch, once ``startup_trials`` trials have finished, after ``warmup_epochs``."""

    enabled: bool = True
    startup_trials: int = Field(5, ge=0)
    warmup_epochs: int = Field(0, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        return {"enabled": v} if isinstance(v, bool) else v


class RefineConfig(StrictModel):
    """The coarse-to-fine second stage around the best coarse trial.

    Attributes:
        trials: trials of the refine stage (>= 1).
        shrink: share of each range kept, in (0, 1]: a linear range keeps a window of
            ``shrink * (high - low)`` centred on the best value, a log range
            ``[best / f, best * f]`` with ``f = (high / low) ** (shrink / 2)``, both clipped.
        keep_categorical: keep searching categorical parameters (default: fix them to the best choice).
        sampler: ``tpe`` | ``random`` (default: the search's sampler; ``random`` after a grid).
    """

    trials: int = Field(..., ge=1)
    shrink: float = Field(0.25, gt=0, le=1)
    keep_categorical: bool = False
    sampler: Literal["tpe", "random"] | None = None


class SearchSpace(StrictModel):
    """The ``search:`` section: what to sample, how, for how many trials, scored by what.

    Attributes:
        sampler: ``tpe`` (default) | ``random`` | ``grid`` (every combination once).
        params: ``{dotted.path: ParamSpec}``; paths are ``--set`` keys into ``base``.
        trials: trials of the first stage (>= 1; for ``grid`` default and at most the grid size).
        n_jobs: trials trained at once, in threads (default 1; > 1 is not bit-reproducible).
        metric: ``val_acc`` (maximised, default) | ``val_nll`` (minimised): the ensemble's
            metric on the validation split after training.
        prune: pruning on the per-epoch validation metric (:class:`PruneConfig`; default off).
        refine: an optional coarse-to-fine stage (:class:`RefineConfig`).
        baseline: the first trial trains the base config's own values of the searched
            parameters (when they lie in the space), so the report shows what the search
            gained over them (default true; not with the grid sampler).
    """

    sampler: Literal["tpe", "random", "grid"] = "tpe"
    baseline: bool = True
    params: dict[str, ParamSpec] = Field(..., min_length=1)
    trials: int | None = Field(None, ge=1, validate_default=True)
    n_jobs: int = Field(1, ge=1)
    metric: Literal["val_acc", "val_nll"] = "val_acc"
    prune: PruneConfig = Field(default_factory=lambda: PruneConfig(enabled=False))
    refine: RefineConfig | None = None

    @field_validator("params")
    @classmethod
    def _grid_params(cls, v: dict[str, ParamSpec], info: ValidationInfo) -> dict[str, ParamSpec]:
        if info.data.get("sampler") == "grid":
            for name, spec in v.items():
                if spec.grid_values() is None:
                    need = "`grid: [..]` or `step`" if spec.type == "int" else "`grid: [..]`"
                    raise ValueError(f"{name}: the grid sampler needs {need} for a {spec.type} range (the values to visit)")
        return v

    @field_validator("trials")
    @classmethod
    def _trials(cls, v: int | None, info: ValidationInfo) -> int | None:
        if info.data.get("sampler") != "grid":
            if v is None:
                raise ValueError("give the number of trials (>= 1) for the tpe and random samplers")
        elif v is not None and "params" in info.data and v > _grid_size(info.data["params"]):
            raise ValueError(f"{v} is more than the {_grid_size(info.data['params'])} points of the grid; leave it out to run the whole grid")
        return v

    @property
    def direction(self) -> str:
        return _DIRECTION[self.metric]

    @property
    def stage_trials(self) -> int:
        return self.trials if self.trials is not None else _grid_size(self.params)


def _grid_size(params: Mapping[str, ParamSpec]) -> int:
    return math.prod(len(p.grid_values() or []) for p in params.values())


class TuneConfig(StrictModel):
    """``ensemblekit tune``: a base training config, a search over it, an output folder.

    Attributes:
        base: the :class:`RunConfig` every trial trains (needs a validation split).
        search: :class:`SearchSpace`.
        out: the output folder (``study.db``, ``trials/``, reports; default ``runs/tune``).
        name: the study name in ``study.db`` (default ``tune``; the refine stage is ``<name>-refine``).
    """

    base: RunConfig
    search: SearchSpace
    out: str = "runs/tune"
    name: str = Field("tune", min_length=1)

    @field_validator("base")
    @classmethod
    def _val_split(cls, v: RunConfig) -> RunConfig:
        if v.data.name is not None:
            default = _default_option(v.data.name, "val_fraction")
            frac = v.data.options.get("val_fraction", default)
        else:
            frac = v.data.options.get("val_fraction", 0.1)  # an npz file may also carry x_val: checked on loading
        if frac is not None and float(frac) <= 0 and v.data.npz is None:
            raise ValueError(f"data.val_fraction must be > 0: trials are scored on the validation split (got {frac})")
        return v

    @field_validator("search")
    @classmethod
    def _paths(cls, v: SearchSpace, info: ValidationInfo) -> SearchSpace:
        base = info.data.get("base")
        if base is None:
            return v
        raw, full = raw_base(base)
        for name, spec in v.params.items():
            for value in spec.candidates():
                try:
                    RunConfig(**set_paths(raw, {name: value}, full))
                except (ValidationError, ConfigError) as exc:
                    inner = format_validation_error(exc, root=RunConfig) if isinstance(exc, ValidationError) else str(exc)
                    raise ValueError(f"params.{name}: setting {value!r} there makes base invalid: {inner}") from None
        return v


def _default_option(dataset: str, option: str) -> Any:
    import inspect

    param = inspect.signature(DATASETS.get(dataset)).parameters.get(option)
    return None if param is None or param.default is inspect.Parameter.empty else param.default


def raw_base(base: RunConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """The base as the user wrote it (set fields only) and fully resolved (to fill missing parents)."""
    return base.model_dump(exclude_unset=True), base.model_dump()


def was_interrupted(t: FrozenTrial) -> bool:
    """A trial that did not finish on its own: left running by a killed process, or stopped
    by Ctrl-C or an unexpected exception (failed without a recorded error)."""
    return t.state == TrialState.RUNNING or (t.state == TrialState.FAIL and "error" not in t.user_attrs)


def name_of(obj: Any) -> str:
    """JSON stand-in for a callable in a config (an optimizer factory, a schedule)."""
    return getattr(obj, "__qualname__", type(obj).__name__)
