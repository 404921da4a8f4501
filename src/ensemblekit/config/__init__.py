"""Typed configuration for the CLI: YAML -> ``--set`` overrides -> pydantic models.

Everything is validated before anything runs: an unknown key, a wrong type, an
out-of-range value or an unknown model/dataset/method name gives one
:class:`~ensemblekit.errors.ConfigError` naming the field, the value and what is allowed.
"""

from __future__ import annotations

import inspect
from typing import Any, Literal, Mapping

from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator

from ..data.registry import DATASETS
from ..errors import ConfigError
from ..evaluation.config import EvaluationConfig
from ..methods.base import METHODS
from ..models.registry import MODELS, check_kwargs, import_factory, resolve_wrappers
from ..schema import StrictModel, apply_overrides, format_validation_error, load_config, load_yaml, parse_config, parse_yaml, set_paths
from ..training.config import TrainConfig
from .tuning import AutoSeeds, TuningConfig, check_tuning

__all__ = [
    "DataConfig", "ModelConfig", "MethodConfig", "RunConfig", "CompareConfig", "TuningConfig", "AutoSeeds",
    "load_yaml", "parse_yaml", "factory_paths", "set_paths", "apply_overrides", "parse_config", "load_config",
]

_NPZ_OPTIONS = ("val_fraction", "test_fraction", "seed", "num_classes", "task")


def _shorthand(v: Any, keep: tuple[str, ...], into: str) -> Any:
    """A name alone means ``{name: ...}``; keys other than ``keep`` are gathered into ``into``
    (``{name: mnist1d, num_samples: 10}`` -> ``{name: mnist1d, options: {num_samples: 10}}``)."""
    if isinstance(v, str):
        return {"name": v}
    if isinstance(v, Mapping):
        v = dict(v)
        extra = dict(v.pop(into, {}) or {})
        for key in list(v):
            if key not in keep:
                extra[key] = v.pop(key)
        v[into] = extra
    return v


class DataConfig(StrictModel):
    """``mnist1d`` | ``{name: mnist1d, num_samples: 10000}`` | ``{npz: path.npz, val_fraction: 0.1}`` |
    ``{csv: houses.csv, target: price, task: regression}`` (:func:`ensemblekit.data.csvfile.load_csv`).

    ``splits: K`` (``compare`` only): K random train/test splits of all the data's examples,
    ``split_fraction`` (default 0.1) of them for testing, each split x each seed a cell, the
    tables the mean ± std over all of them (the UCI protocol; :func:`ensemblekit.data.splits.resplit`).
    ``split: k`` loads the k-th of them (what each cell of such a comparison trains on).
    """

    name: str | None = None
    npz: str | None = None
    csv: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    splits: int | None = Field(None, ge=1)
    split: int | None = Field(None, ge=0)
    split_fraction: float | None = Field(None, gt=0, lt=1)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        return _shorthand(v, keep=("name", "npz", "csv", "splits", "split", "split_fraction"), into="options")

    @model_validator(mode="after")
    def _check(self) -> "DataConfig":
        if sum(v is not None for v in (self.name, self.npz, self.csv)) != 1:
            raise ValueError("give exactly one of name (a registered dataset), npz or csv (a file path)")
        if self.name is not None:
            fn = DATASETS.get(self.name)
            valid = list(inspect.signature(fn).parameters)
        else:
            valid = list(_NPZ_OPTIONS) + (["target"] if self.csv is not None else [])
        for key in self.options:
            if key not in valid:
                raise ValueError(f"unknown option {key!r} for {self.name or ('npz' if self.npz else 'csv')} data; valid: {', '.join(valid)}")
        return self

    def load(self):  # noqa: ANN201
        """The dataset; an option of the wrong type or range is one ConfigError naming it."""
        from ..data.registry import load_dataset, load_npz
        from ..errors import EnsembleKitError

        try:
            if self.csv is not None:
                from ..data.csvfile import load_csv

                data = load_csv(self.csv, **self.options)
            else:
                data = load_npz(self.npz, **self.options) if self.npz is not None else load_dataset(self.name, **self.options)  # type: ignore[arg-type]
            if self.split is None:
                return data
            from ..data.splits import resplit

            return resplit(data, self.split, self.split_fraction if self.split_fraction is not None else 0.1)
        except EnsembleKitError:
            raise
        except (TypeError, ValueError, OverflowError) as exc:
            raise ConfigError(f"data {self.name or self.npz or self.csv!r} with options {self.options}: {type(exc).__name__}: {exc}") from None


class ModelConfig(StrictModel):
    """``cnn1d`` | ``{name: resnet, kwargs: {depth: 20}}`` | ``{factory: "pkg.mod:fn", kwargs: {...}}``.

    Any other key is a registered model wrapper (``ensemblekit list`` shows them), applied
    to every member: ``dropconnect: p`` wraps every Linear/Conv layer in DropConnect with
    drop probability p; ``frozen_head: s`` (> 0) replaces the head by
    BatchNorm1d(affine=False) -> Linear frozen at its default initialisation times s
    (margin boosting); 0 leaves the model unwrapped.
    """

    name: str | None = None
    factory: str | None = None
    kwargs: dict[str, Any] = Field(default_factory=dict)
    wrappers: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        return _shorthand(v, keep=("name", "factory", "kwargs"), into="wrappers")

    @model_validator(mode="after")
    def _check(self) -> "ModelConfig":
        if (self.name is None) == (self.factory is None):
            raise ValueError("give exactly one of name (a registered model) or factory ('pkg.mod:fn')")
        fn = MODELS.get(self.name) if self.name is not None else import_factory(self.factory)  # type: ignore[arg-type]
        check_kwargs(fn, self.kwargs, f"model {self.name or self.factory!r}")
        active = resolve_wrappers(self.wrappers)
        object.__setattr__(self, "wrappers", {w.name: v for w, v in active})
        return self

    def spec(self) -> dict[str, Any]:
        key = "name" if self.name is not None else "factory"
        return {key: self.name or self.factory, "kwargs": dict(self.kwargs), **self.wrappers}


class MethodConfig(StrictModel):
    """``independent`` | ``{name: independent, members: 5, label: "Ind", train: {...}, model: {...}}``.

    ``label`` names the row in comparisons; ``train`` overrides the shared training options;
    ``model`` replaces the shared model for this method (e.g. a frozen head for one row).
    """

    name: str
    label: str | None = None
    train: dict[str, Any] = Field(default_factory=dict)
    model: ModelConfig | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    _hyperparameters: StrictModel | None = PrivateAttr(default=None)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        return _shorthand(v, keep=("name", "label", "train", "model"), into="params")

    @model_validator(mode="after")
    def _check(self) -> "MethodConfig":
        cls = METHODS.get(self.name)
        try:
            self._hyperparameters = cls.Params(**self.params)
        except ValidationError as exc:
            raise ValueError(format_validation_error(exc, root=cls.Params)) from None
        return self

    @property
    def hyperparameters(self) -> StrictModel:
        """The method's validated hyperparameters (its ``Params``), validated once, here."""
        assert self._hyperparameters is not None
        return self._hyperparameters

    def train_config(self, shared: TrainConfig, where: str) -> TrainConfig:
        """The training options this method runs with: ``shared``, then the method's own ``train``
        (a ValueError naming ``where`` when the merge is invalid)."""
        if not self.train:
            return shared
        try:
            return TrainConfig(**{**shared.model_dump(exclude_unset=True), **self.train})
        except ValidationError as exc:
            raise ValueError(format_validation_error(exc, prefix=where, root=TrainConfig)) from None

    @property
    def display(self) -> str:
        return self.label or self.name

    def method_class(self):  # noqa: ANN201
        return METHODS.get(self.name)

    def model_spec(self, shared: ModelConfig) -> dict[str, Any]:
        """The model spec this method trains: its own ``model`` if given, else ``shared``."""
        return (self.model or shared).spec()


class RunConfig(StrictModel):
    """``ensemblekit train``: one method on one dataset, one run directory (``evaluation``: what is measured;
    see :class:`~ensemblekit.evaluation.config.EvaluationConfig`)."""

    data: DataConfig = Field(default_factory=lambda: DataConfig(name="mnist1d"))
    model: ModelConfig = Field(default_factory=lambda: ModelConfig(name="cnn1d"))
    method: MethodConfig = Field(default_factory=lambda: MethodConfig(name="independent"))
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    seed: int = 0
    out: str = "runs"
    name: str | None = None

    @model_validator(mode="after")
    def _merge(self) -> "RunConfig":
        self.method.train_config(self.train, "method.train")
        if self.data.splits is not None:
            raise ValueError("data.splits repeats a comparison over K random splits (ensemblekit compare); "
                             "one run trains on one split: use data.split: k")
        return self


class CompareConfig(StrictModel):
    """``ensemblekit compare``: methods x budgets x seeds; budget B = one model trained with ``train``.

    ``budget_unit``: ``epochs`` (default: kB is what each method's ``at_budget(k)`` makes of k
    single-model trainings) or ``flops`` (kB is k times the measured training FLOPs of one
    single model; every method with an epoch knob gets the epochs that fit, the others run
    as with ``epochs`` and their rows say so)."""

    data: DataConfig = Field(default_factory=lambda: DataConfig(name="mnist1d"))
    model: ModelConfig = Field(default_factory=lambda: ModelConfig(name="cnn1d"))
    train: TrainConfig = Field(default_factory=TrainConfig)
    budgets: list[int] = Field(default_factory=lambda: [1, 2, 3], min_length=1)
    budget_unit: Literal["epochs", "flops"] = "epochs"
    seeds: list[int] | dict[str, AutoSeeds] = Field(default_factory=lambda: [0, 1, 2])
    methods: list[MethodConfig] = Field(default_factory=lambda: [MethodConfig(name="independent")], min_length=1)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    tuning: TuningConfig | None = None
    out: str = "runs/compare"
    name: str | None = None

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int] | dict[str, AutoSeeds]) -> list[int] | dict[str, AutoSeeds]:
        if isinstance(v, dict) and set(v) != {"auto"}:
            raise ValueError(f"seeds is a list of ints or {{auto: {{min, max}}}}, got keys {sorted(v)}")
        if isinstance(v, list) and (not v or len(set(v)) != len(v)):
            raise ValueError(f"seeds must be a non-empty list of distinct ints, got {v}")
        return v

    @property
    def auto_seeds(self) -> AutoSeeds | None:
        """The ``seeds: {auto: ...}`` settings, or None for a fixed list."""
        return self.seeds["auto"] if isinstance(self.seeds, dict) else None

    @property
    def seed_list(self) -> list[int]:
        """The seeds the comparison starts with: the list, or ``0..min-1`` with auto seeds."""
        auto = self.auto_seeds
        return list(range(auto.min)) if auto is not None else list(self.seeds)  # type: ignore[arg-type]

    @field_validator("budgets")
    @classmethod
    def _budgets(cls, v: list[int]) -> list[int]:
        if any(b < 1 for b in v):
            raise ValueError(f"budgets must be integers >= 1, got {v}")
        return sorted(set(v))

    @field_validator("methods")
    @classmethod
    def _labels(cls, v: list[MethodConfig]) -> list[MethodConfig]:
        labels = [m.display for m in v]
        dup = sorted({x for x in labels if labels.count(x) > 1})
        if dup:
            raise ValueError(f"method labels must be unique, {dup} repeat; give each a label")
        return v

    @model_validator(mode="after")
    def _method_trains(self) -> "CompareConfig":
        for m in self.methods:
            m.train_config(self.train, f"methods[{m.display}].train")
        if self.tuning is not None:
            check_tuning(self)
        return self


def factory_paths(raw: Any) -> list[str]:
    """Every model factory path (``{factory: "pkg.mod:fn"}``) a raw config names, anywhere in it."""
    out: list[str] = []
    if isinstance(raw, Mapping):
        if isinstance(raw.get("factory"), str):
            out.append(raw["factory"])
        for v in raw.values():
            out += factory_paths(v)
    elif isinstance(raw, list):
        for v in raw:
            out += factory_paths(v)
    return out
