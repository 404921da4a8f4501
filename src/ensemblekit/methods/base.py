"""The surface every ensemble method shares (scikit-learn style).

Hyperparameters are stored by ``__init__`` and validated at :meth:`Method.fit`;
``fit`` returns ``self``; learned state ends in ``_``: ``ensemble_`` (an
:class:`~ensemblekit.ensemble.Ensemble`), ``history_`` (per-epoch records: dicts with at
least ``stage``), ``cost_`` (wall-clock seconds per stage, plus ``fit_s``) and ``flops_``
(measured training FLOPs per stage; ``None`` where a stage's cost was not measured).
Predictions keep the member axis ``(M, B, C)``. Formulas, defaults and the resolved
ambiguities of every method: ``docs/methods.md``.
"""

from __future__ import annotations

import time
from typing import Any, Callable, ClassVar, Mapping, Sequence

import torch
from pydantic import ValidationError

from ..data.dataset import Data
from ..ensemble import Ensemble
from ..errors import ConfigError, DataError
from ..models.registry import ModelFactory, model_factory
from ..registry import Registry
from ..seeding import derive_seed
from ..training.callbacks import Callback
from ..training.checkpoint import RunDir
from ..schema import StrictModel, format_validation_error
from ..training.config import TrainConfig

__all__ = ["Method", "METHODS", "register_method", "create_method", "list_methods", "check_model_fits", "build_member", "with_wrapper", "BOTH_TASKS"]

METHODS: Registry[type["Method"]] = Registry("method", discover=("ensemblekit.methods",))

BOTH_TASKS = ("classification", "regression")
"""``Method.tasks`` of a method that trains on class labels and on regression targets alike."""


def register_method(name: str) -> Callable[[type["Method"]], type["Method"]]:
    """Class decorator registering a :class:`Method` subclass under ``name``."""

    def decorator(cls: type["Method"]) -> type["Method"]:
        cls.name = name
        return METHODS.register(name)(cls)

    return decorator


def list_methods() -> list[str]:
    return METHODS.names()


def create_method(name: str, **kwargs: Any) -> "Method":
    """Build a registered method, e.g. ``create_method("independent", model="cnn1d", members=5, epochs=30)``.

    Keyword arguments are the method's hyperparameters, ``model``, ``seed``, ``train``
    (a TrainConfig or dict) and any TrainConfig field given directly (``epochs=30``).
    """
    return METHODS.get(name)(**kwargs)


def build_member(factory: ModelFactory) -> torch.nn.Module:
    """One member from ``factory``; the builder's own errors (a wrong argument type, a user
    factory that raises) become one ConfigError naming the model."""
    try:
        return factory()
    except ConfigError:
        raise
    except Exception as exc:  # the builder's or the user's own code
        raise ConfigError(f"model {factory.label!r} could not be built: {type(exc).__name__}: {exc}") from exc


def check_model_fits(factory: ModelFactory, data: Data, width: int | None = None) -> None:
    """Dry-run one member on two training examples; a clear DataError if the shapes do not fit.

    ``width``: the outputs a member must have (default ``data.num_classes``; for regression
    2*D for a mean-variance head, D for a means-only one: :func:`~ensemblekit.training.tasks.head_width`)."""
    x = data.train.x[:2] if data.train.in_memory else data.train.tensors()[0][:2]
    module = build_member(factory)
    module.eval()
    try:
        with torch.no_grad():
            out = module(x)
    except Exception as exc:  # the model's own shape error
        raise DataError(
            f"model {factory.label!r} cannot take {data.name} examples of shape {tuple(data.input_shape)}: {exc}"
        ) from exc
    width = data.num_classes if width is None else width
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (x.shape[0], width):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        what = (f"{data.num_classes} classes" if not data.is_regression else
                f"{data.num_outputs} target(s): {'means only (train.loss: mse)' if width == data.num_outputs else 'a mean and a variance each'}")
        raise DataError(f"model {factory.label!r} outputs {shape} for a batch of 2; expected (2, {width}) for {what}")


def with_wrapper(model: Any, key: str, value: Any) -> Any:
    """``model`` with the registered wrapper ``key: value`` added (a name, a spec dict or a callable)."""
    if isinstance(model, str):
        return {"name": model, key: value}
    if isinstance(model, Mapping):
        return {**dict(model), key: value}
    if isinstance(model, ModelFactory) and model.spec is not None:
        return {**model.spec, key: value}
    if callable(model):
        from ..models.registry import WRAPPERS

        wrapper = WRAPPERS.get(key)
        checked = wrapper.check(value)
        return lambda: wrapper.apply(model(), checked)
    return model


class Method:
    """Base class of ensemble methods.

    Subclasses declare ``Params`` (a pydantic model of their hyperparameters), implement
    ``_fit(data, factory, run)`` to set ``ensemble_`` and ``history_``, and
    ``at_budget`` (how to spend k single-model budgets, for ``compare``).

    Args:
        model: registered name, ``{name, kwargs}``, ``{factory, kwargs}`` or a zero-argument
            callable returning an ``nn.Module``.
        seed: the run seed; member initialisations and data orders derive from it.
        train: a :class:`TrainConfig` or dict; TrainConfig fields may also be given
            directly as keyword arguments (``epochs=30``).
        **kwargs: the method's hyperparameters (see ``Params``).
    """

    name: ClassVar[str] = "method"
    Params: ClassVar[type[StrictModel]] = StrictModel
    uses_model: ClassVar[bool] = True  # False: the method builds its own networks (the architecture searches)
    tasks: ClassVar[tuple[str, ...]] = ("classification",)  # the data tasks (Data.task) the method trains on
    #: The method's own hyperparameters a ``compare`` with ``tuning:`` searches, ``{param: ParamSpec mapping}``
    #: (the learning rate and weight decay are searched for every method; docs/comparisons.md).
    knobs: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    #: Hyperparameters whose value may be a finished run's directory (``from_run``, a teacher): a
    #: ``compare`` cell is keyed by the contents of the run it reads, not only by its path.
    run_inputs: ClassVar[tuple[str, ...]] = ()

    def __init__(self, model: Any = "cnn1d", *, seed: int = 0, train: TrainConfig | dict[str, Any] | None = None, **kwargs: Any) -> None:
        self.model = model
        self.seed = seed
        base = train.model_dump() if isinstance(train, TrainConfig) else dict(train or {})
        self.params: dict[str, Any] = {}
        for key, value in kwargs.items():
            if key in self.Params.model_fields:
                self.params[key] = value
            elif key in TrainConfig.model_fields:
                base[key] = value
            else:
                valid = sorted([*self.Params.model_fields, *TrainConfig.model_fields, "model", "seed", "train"])
                raise ConfigError(f"{self.name}: unknown argument {key!r}; valid: {', '.join(valid)}")
        self.train = base

    # ------------------------------------------------------------------ hooks for subclasses
    @classmethod
    def at_budget(cls, budget: int, train: TrainConfig, params: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """Keyword arguments that make this method spend ``budget`` single-model budgets
        (one budget = one model trained with ``train``); ``params`` are the hyperparameters
        the user set for the method (the result overrides them). ``None`` means the method
        cannot run within that budget; ``compare`` then leaves the cell empty."""
        raise NotImplementedError(f"{cls.name} does not define how to spend a budget")

    def _fit(self, data: Data, factory: ModelFactory, run: RunDir | None) -> None:
        raise NotImplementedError

    @classmethod
    def size_reference(cls, params: Mapping[str, Any]) -> bool:
        """Whether a row of this method with these hyperparameters (the row's ``hyperparameters``)
        is k independently trained members, k its size: the reference curve of the deep-ensemble
        equivalent (Ashukha et al. 2020) in ``compare``'s report (default: no)."""
        return False

    # ------------------------------------------------------------------ public surface
    def get_params(self) -> dict[str, Any]:
        return {"model": self.model, "seed": self.seed, "train": dict(self.train), **self.params}

    def member_seeds(self, n: int, label: str = "member") -> list[int]:
        return [derive_seed(self.seed, label, i) for i in range(n)]

    def adopt(self, params: StrictModel) -> "Method":
        """Take hyperparameters a config has already validated from this method's ``params`` (an
        instance of ``Params``: :attr:`ensemblekit.config.MethodConfig.hyperparameters`) instead
        of validating them again."""
        if not isinstance(params, self.Params):
            raise ConfigError(f"{self.name}: adopt() takes this method's {self.Params.__name__}, got {type(params).__name__}")
        self.params_, self._validated_params = params, dict(self.params)
        return self

    def validate(self) -> None:
        """Check hyperparameters and training options (called by :meth:`fit`); hyperparameters
        that were validated (or adopted) and not changed since are not validated again."""
        if getattr(self, "_validated_params", None) != self.params:
            try:
                self.params_ = self.Params(**self.params)
            except ValidationError as exc:
                raise ConfigError(format_validation_error(exc, prefix=self.name, root=self.Params)) from None
            self._validated_params = dict(self.params)
        try:
            self.train_config_ = TrainConfig(**self.train)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, prefix="train", root=TrainConfig)) from None

    def check(self, data: Data) -> ModelFactory:
        """Everything that can be checked without training, before anything is written.

        Validates the hyperparameters and training options, builds one member and runs it on
        two training examples, builds the optimizer (torch's own argument checks), the
        learning-rate policy (evaluated at a few steps), the augmentations and test-time
        transforms for this data, and runs the method's own checks (``_check``: e.g. that a
        snapshot cycle fits in the run). Called by :meth:`fit`; the commands call it first.

        Returns:
            The model factory.

        Raises:
            ConfigError / DataError: one line naming what is wrong.
        """
        from ..data.batching import steps_per_epoch
        from ..training.probe import probe_training

        from ..training.tasks import check_task, head_width

        self.validate()
        if data.task not in self.tasks:
            raise ConfigError(f"{self.name} trains on {' and '.join(self.tasks)} data, and this data is {data.task} "
                              f"({'float targets' if data.is_regression else 'class labels'}); methods for regression: "
                              f"{', '.join(n for n in METHODS.names() if data.task in METHODS.get(n).tasks)}")
        check_task(self.train_config_, data)
        factory = self._factory(data)
        check_model_fits(factory, data, head_width(self.train_config_, data))
        probe_training(self.train_config_, data, steps_per_epoch(data.train, self.train_config_.batch_size))
        cfg = self.train_config_
        if cfg.member_chunk is not None or cfg.devices or cfg.early_stopping is not None:
            from ..training.chunks import check_execution

            with torch.random.fork_rng(devices=[]):
                model = self._trainable(factory, data)
            if model is not None:
                check_execution(cfg, model, self.name)
        self._check(data, factory)
        return factory

    def _check(self, data: Data, factory: ModelFactory) -> None:
        """Method-specific checks that need the data (default: none)."""

    def epoch_flops(self, data: Data) -> float | None:
        """Measured FLOPs of one epoch of this method's training (all it trains per epoch), or
        ``None`` when it has no single epoch knob (a search, a curve between trained endpoints).
        ``compare`` with ``budget_unit: flops`` uses it to give the method the epochs that fit."""
        from ..training.flops import epoch_flops

        self.validate()
        factory = self._factory(data)
        with torch.random.fork_rng(devices=[]):
            model = self._trainable(factory, data)
        if model is None:
            return None
        return epoch_flops(model, data, self.train_config_.batch_size, per_member=self._per_member())

    def pass_flops(self, data: Data) -> float:
        """Estimated FLOPs of the passes this method makes besides its optimisation steps (SWA's and
        SWAG's BatchNorm recomputation), which ``budget_unit: flops`` takes out of the budget before
        it fits the steps (default: none)."""
        return 0.0

    def _trainable(self, factory: ModelFactory, data: Data) -> Any:
        """A model whose training epoch costs what one epoch of this method costs (for
        :meth:`epoch_flops`; default: none, the method has no epoch knob)."""
        return None

    def _per_member(self) -> bool:
        return self.train_config_.data_order != "shared"

    def _model(self) -> Any:
        """The model description the members are built from (default: ``model`` as given;
        a method may add a registered wrapper, see :func:`with_wrapper`)."""
        return self.model

    def _factory(self, data: Data) -> ModelFactory:
        """The members' factory for ``data``: C outputs for classification; for regression the
        model's final layer made a ``gaussian`` head for the data's D targets (learned variance,
        or means only with ``train.loss: mse``) unless the model spec sets ``gaussian`` itself."""
        model = self._model()
        spec = model.spec if isinstance(model, ModelFactory) else model
        if data.is_regression and not (isinstance(spec, Mapping) and "gaussian" in spec):
            model = with_wrapper(model, "gaussian", "none" if self.train_config_.loss == "mse" else "learned")
        return model_factory(model, input_shape=data.input_shape, num_classes=data.num_outputs if data.is_regression else data.num_classes)

    def fit(self, data: Data, *, run_dir: str | None = None, resume: bool = True, callbacks: Sequence[Callback] = (),
            cache_dir: str | None = None, backend: Any = None) -> "Method":
        """Train on ``data.train``; returns ``self`` with ``ensemble_``, ``history_``, ``cost_``, ``flops_``.

        Args:
            data: a :class:`~ensemblekit.data.Data` (``load_dataset``, ``from_arrays``...).
            run_dir: folder for checkpoints and ``metrics.jsonl`` (``None``: in memory).
            resume: continue from checkpoints found in ``run_dir``.
            callbacks: extra :class:`~ensemblekit.training.Callback` hooks run in every
                training stage of the engine (e.g. reporting to a hyperparameter search).
            cache_dir: a folder for intermediate results that are pure functions of their
                spec and may be shared with other runs (a DARTS search, trained candidate
                architectures), each stored under the hash of its spec, data included
                (default: ``<run_dir>/cache``; in memory without a run directory).
            backend: where independent units inside the method run (an execution backend
                with ``map``, e.g. ``get_backend("ray")``, for EdgeNES's candidate pool;
                default: one after another in this process).

        Raises:
            ConfigError: invalid hyperparameters. DataError: data the model cannot take.
            NonFiniteLossError: the loss diverged.
        """
        factory = self.check(data)
        run = RunDir(run_dir) if run_dir is not None else None
        self.history_: list[dict[str, Any]] = []
        self.cost_: dict[str, float] = {}
        self.flops_: dict[str, float | None] = {}
        self.resume_ = resume
        self.extra_callbacks_ = list(callbacks)
        self.cache_dir_ = cache_dir if cache_dir is not None else (run.file("cache") if run is not None else None)
        self.backend_ = backend
        start = time.perf_counter()
        train_data, scaling = self._task_data(data)
        self._fit(train_data, factory, run)
        if data.is_regression:
            self.ensemble_.readout = self._readout(train_data, scaling)
        self.cost_["fit_s"] = time.perf_counter() - start
        return self

    def _task_data(self, data: Data) -> tuple[Data, Any]:
        """The data the members train on: regression data standardised with its training split's
        statistics (``train.standardize``, the default), which the ensemble then carries."""
        if not (data.is_regression and self.train_config_.standardize):
            return data, None
        from ..data.scaling import standardize

        return standardize(data)

    def _readout(self, train_data: Data, scaling: Any) -> Any:
        """The fitted ensemble's readout: regression outputs in the data's own units; a means-only
        head's noise variance is the mean squared residual of its members on the training split."""
        from ..evaluation.forward import predictive
        from ..metrics.head_outputs import Readout

        readout = Readout.for_data(train_data, scaling=scaling)
        if self.train_config_.loss != "mse":
            return readout
        means = predictive(self.ensemble_, train_data.train, readout=Readout.for_data(train_data)).mean
        y = train_data.train.tensors()[1].to(means.device)
        residual = (means - y).square().mean(dim=(0, 1)).reshape(-1)  # per output, over members and examples
        return readout.with_noise(residual.tolist())

    @property
    def train_seconds_(self) -> float:
        """Seconds spent in training stages (summed across resumes)."""
        return float(sum(v for k, v in self.cost_.items() if k != "fit_s"))

    @property
    def train_flops_(self) -> float | None:
        """Training FLOPs of every stage together (``None`` when a stage was not measured)."""
        values = list(self.flops_.values())
        return None if not values or any(v is None for v in values) else float(sum(values))

    def details(self, data: Data) -> dict[str, Any]:
        """Method-specific JSON results for the run's row (``results.json`` ``details``):
        e.g. EdgeNES's pool and Spearman correlation, the variational family's accuracy vs
        pruned share. Called after :meth:`fit`; default: nothing."""
        return {}

    def lr_policy(self, steps_per_epoch: int) -> tuple[Any, list[int]]:
        """The learning-rate policy over the whole run and the iterations where members are
        collected (for ``ensemblekit schedule``); default: ``train.schedule``, no collection
        points. Methods with their own policy (snapshot, FGE) override this. Call after
        :meth:`validate`."""
        from ..training.optim import optimizer_lr
        from ..training.schedules import build_schedule

        cfg = self.train_config_
        total = cfg.total_steps(steps_per_epoch)
        return build_schedule(cfg.schedule, lr=optimizer_lr(cfg.optimizer), total_steps=total, steps_per_epoch=steps_per_epoch), []

    def report(self, run: RunDir, data: Data) -> None:
        """Write method-specific tables and plots into a run directory (default: nothing)."""

    def predict_proba(self, x: Any) -> torch.Tensor:
        """Per-member probabilities ``(M, N, C)`` of the fitted ensemble (classification)."""
        self._check_fitted()
        return self.ensemble_.predict_proba(x)

    def predictive(self, x: Any, batch_size: int = 1024) -> Any:
        """The fitted ensemble's members' predictive on ``x`` (a tensor or a Split, in the data's
        units): a :class:`~ensemblekit.metrics.predictive.Categorical` for classification, a
        :class:`~ensemblekit.metrics.predictive.Gaussian` (means and variances in the targets'
        units) for regression."""
        from ..evaluation.forward import predictive

        self._check_fitted()
        return predictive(self.ensemble_, x, batch_size=batch_size)

    def _check_fitted(self) -> None:
        if not hasattr(self, "ensemble_"):
            raise ConfigError(f"{self.name} is not fitted yet; call fit(data) first")

    def _train_stage(self, model: Any, data: Data, run: RunDir | None, stage: str, *, seed: int | None = None,
                     tag: dict[str, Any] | None = None, **trainer_kwargs: Any) -> Any:
        """Run one engine stage (with the user's callbacks), recording its history and cost.

        ``model`` is any trainable model (an Ensemble, a curve, a hypernetwork); ``seed``
        defaults to the method's seed; ``tag`` is added to each of the stage's history records."""
        from ..training.engine import Trainer

        config = trainer_kwargs.pop("config", self.train_config_)
        trainer_kwargs["callbacks"] = [*trainer_kwargs.get("callbacks", ()), *getattr(self, "extra_callbacks_", [])]
        trainer = Trainer(model, data, config, seed=self.seed if seed is None else seed, run=run, stage=stage, resume=self.resume_, **trainer_kwargs)
        trained = trainer.fit()
        self._record_stage(stage, trainer.cost(), [{**h, **(tag or {})} for h in trainer.history])
        self.last_trainer_ = trainer
        return trained

    def _measured(self, stage: str, fn: Callable[[], Any], pure: bool = False) -> Any:
        """Run a pass that is not an optimisation step (BatchNorm recomputation, training
        margins, a post-hoc fit), adding its seconds and measured FLOPs to ``stage`` in ``cost_``/``flops_``.

        ``pure``: ``fn`` changes nothing it reads (a fit that returns a new predictor), so its seconds
        are those of a plain run and its FLOPs are counted on a second run (under a forked random
        state, its result discarded): the counter's own overhead, about as long again as a fit of
        many small operations, stays out of the seconds. Otherwise the one run is counted and timed."""
        from ..training.flops import count_flops

        start = time.perf_counter()
        if pure:
            out = fn()
            seconds = time.perf_counter() - start
            with torch.random.fork_rng(devices=[]):
                _, flops = count_flops(fn)
        else:
            out, flops = count_flops(fn)
            seconds = time.perf_counter() - start
        self.cost_[stage] = self.cost_.get(stage, 0.0) + seconds
        self.flops_[stage] = (self.flops_.get(stage) or 0.0) + flops
        return out

    def _record_stage(self, stage: str, cost: dict[str, Any], history: Sequence[dict[str, Any]] = ()) -> None:
        """Record a finished stage: its seconds in ``cost_``, FLOPs in ``flops_``, records in ``history_``."""
        self.cost_[stage] = float(cost.get("seconds") or 0.0)
        self.flops_[stage] = cost.get("flops")
        self.history_.extend({"stage": stage, **h} for h in history)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}(model={self.model!r}{', ' if args else ''}{args})"
