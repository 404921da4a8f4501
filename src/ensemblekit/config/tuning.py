"""``compare``'s ``tuning:`` and ``seeds: {auto: ...}`` blocks; each method's search space and setting sampled values.

Every method's space has the same two training knobs, the learning rate (log scale, ``[lr / f,
lr * f]`` around the configured one) and the weight decay (log scale, a decade either side of
the configured one, ``[1e-6, 1e-3]`` when it is zero), plus the method's own hyperparameters
(its class's ``knobs``: FGE/SSE cycle length and rates, SWAG's rank and scale, the
parameter-sharing ensembles' settings, the variational family's lambda range and prior...).
The config's ``tuning.space.<label>`` adds or replaces paths. Ashukha et al. ("Pitfalls of
In-Domain Uncertainty Estimation and Ensembling in Deep Learning", ICLR 2020) show how
comparisons with one shared setting mislead; docs/comparisons.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, Mapping

from pydantic import Field, ValidationError, model_validator

from ..errors import ConfigError
from ..schema import StrictModel, format_validation_error, set_paths
from ..schema.params import ParamSpec
from ..training.config import TrainConfig

if TYPE_CHECKING:
    from . import CompareConfig, MethodConfig

__all__ = ["TuningConfig", "AutoSeeds", "method_space", "apply_values", "tuned_labels", "check_tuning"]


class TuningConfig(StrictModel):
    """``compare``'s ``tuning:`` block: every tuned method gets the same number of trials.

    A trial trains the method at ``budget`` with ``seed`` on the training split, with sampled
    values at dotted paths of its entry, and is scored by ``objective`` on the validation split
    (never the test split). The best setting is then trained for every seed and budget beside
    (or instead of) the untuned one. docs/comparisons.md.

    Attributes:
        trials: trials per method, the same for every tuned method (>= 1); a trial that fails
            (diverges) counts as one.
        objective: ``val_nll`` (default), ``val_error`` (%) or for regression ``val_rmse``.
        sampler: ``tpe`` (default) | ``random`` (optuna's).
        budget: the budget k (kB) trials train at (default 1).
        seed: the seed trials train with (default: the comparison's first seed); with
            ``data.splits`` the trials train on the first random split.
        methods: the labels of the methods tuned (default: all).
        untuned: keep the untuned rows beside the tuned ones (default true).
        lr_range: the learning rate is searched on a log scale in ``[lr / f, lr * f]`` around
            the configured one, ``f = lr_range`` (default 5).
        space: per method label, ``{path: ParamSpec}`` added to (or replacing, path by path) its
            default space: ``train.optimizer.lr``, ``train.optimizer.weight_decay`` and the
            method's own knobs (its class's ``knobs``). A path starting with ``train.`` sets the
            method's training options, any other path its hyperparameters.
    """

    trials: int = Field(..., ge=1)
    objective: Literal["val_nll", "val_error", "val_rmse"] = "val_nll"
    sampler: Literal["tpe", "random"] = "tpe"
    budget: int = Field(1, ge=1)
    seed: int | None = None
    methods: list[str] | None = None
    untuned: bool = True
    lr_range: float = Field(5.0, gt=1)
    space: dict[str, dict[str, ParamSpec]] = Field(default_factory=dict)


class AutoSeeds(StrictModel):
    """``seeds: {auto: {min: 3, max: 10}}``: add seeds (0, 1, 2, ...) one at a time until the 95%
    interval of the difference between the two best methods excludes zero, or ``max`` is reached.

    Attributes:
        min: seeds run before the first look (>= 2: an interval needs two).
        max: the most seeds run (>= min).
        metric: the deciding metric (default: the table's headline, test error % for
            classification and test NLL for regression): ``error``, ``nll`` or ``rmse``.
        budget: the deciding budget (default: the largest).
    """

    min: int = Field(3, ge=2)
    max: int = Field(10, ge=2)
    metric: Literal["error", "nll", "rmse"] | None = None
    budget: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _range(self) -> "AutoSeeds":
        if self.max < self.min:
            raise ValueError(f"auto seeds: max ({self.max}) must be >= min ({self.min})")
        return self



def _optimizer(train: TrainConfig) -> dict[str, Any] | None:
    opt = train.optimizer
    if isinstance(opt, str):
        return {"name": opt}
    return dict(opt) if isinstance(opt, Mapping) else None  # a callable optimizer: no lr to search


def _training_space(train: TrainConfig, lr_range: float) -> dict[str, ParamSpec]:
    from ..training.optim import optimizer_lr

    opt = _optimizer(train)
    if opt is None:
        return {}
    lr = float(optimizer_lr(train.optimizer))
    wd = float(opt.get("weight_decay", 0.0) or 0.0)
    low, high = (wd / 10, wd * 10) if wd > 0 else (1e-6, 1e-3)
    return {"train.optimizer.lr": ParamSpec(type="float", low=lr / lr_range, high=lr * lr_range, log=True),
            "train.optimizer.weight_decay": ParamSpec(type="float", low=low, high=high, log=True)}


def method_space(method: "MethodConfig", shared: TrainConfig, tuning: TuningConfig) -> dict[str, ParamSpec]:
    """The ``{path: ParamSpec}`` searched for ``method``: learning rate and weight decay, the method's
    knobs, then the config's ``tuning.space[label]`` (path by path)."""
    train = method.train_config(shared, f"methods[{method.display}].train")
    space = _training_space(train, tuning.lr_range)
    space.update({k: ParamSpec(**v) for k, v in method.method_class().knobs.items()})
    space.update(tuning.space.get(method.display, {}))
    return space


def apply_values(method: "MethodConfig", shared: TrainConfig, values: Mapping[str, Any]) -> dict[str, Any]:
    """The method's entry (a JSON-able dict) with each sampled value set at its path.

    ``train.<path>`` sets the method's training options (the shared ones, then the method's
    own, then the value: ``train.optimizer.lr`` keeps the optimizer's name and other
    arguments); any other path sets a hyperparameter (dotted paths reach into mappings).
    """
    entry = method.model_dump(mode="json", exclude_none=True)
    train_values = {k[len("train."):]: v for k, v in values.items() if k.startswith("train.")}
    param_values = {k: v for k, v in values.items() if not k.startswith("train.")}
    if train_values:
        merged = {**shared.model_dump(mode="json", exclude_unset=True), **entry.get("train", {})}
        if isinstance(merged.get("optimizer"), str):
            merged["optimizer"] = {"name": merged["optimizer"]}
        changed = set_paths(merged, train_values, shared.model_dump(mode="json"))
        entry["train"] = {**entry.get("train", {}), **{k.split(".")[0]: changed[k.split(".")[0]] for k in train_values}}
    if param_values:
        entry["params"] = set_paths(entry.get("params", {}), param_values)
    return entry


def tuned_labels(cfg: "CompareConfig") -> list[str]:
    """The labels of the methods ``cfg.tuning`` tunes (all by default), in table order."""
    assert cfg.tuning is not None
    wanted = cfg.tuning.methods
    return [m.display for m in cfg.methods if wanted is None or m.display in wanted]


def check_tuning(cfg: "CompareConfig") -> None:
    """Refuse, in one line, a ``tuning:`` block that names unknown labels, leaves a method nothing to
    search, or whose space makes a method invalid at either end of a range (or at any choice)."""
    from . import MethodConfig

    tuning = cfg.tuning
    assert tuning is not None
    labels = [m.display for m in cfg.methods]
    unknown = sorted({*(tuning.methods or []), *tuning.space} - set(labels))
    if unknown:
        raise ValueError(f"tuning names methods the comparison does not have: {unknown} (labels: {labels})")
    if tuning.budget not in cfg.budgets:
        raise ValueError(f"tuning.budget {tuning.budget} is not one of the budgets {cfg.budgets}")
    for m in cfg.methods:
        if m.display not in tuned_labels(cfg):
            continue
        space = method_space(m, cfg.train, tuning)
        if not space:
            raise ValueError(f"tuning: {m.display} has nothing to search (a callable optimizer and no knobs); give tuning.space.{m.display}")
        for path, spec in space.items():
            for value in spec.candidates():
                try:
                    entry = MethodConfig(**apply_values(m, cfg.train, {path: value}))
                    entry.train_config(cfg.train, f"methods[{m.display}].train")
                except (ValidationError, ConfigError, ValueError) as exc:
                    inner = format_validation_error(exc) if isinstance(exc, ValidationError) else str(exc)
                    raise ValueError(f"tuning.space.{m.display}.{path}: {value!r} makes the method invalid: {inner}") from None

