"""One training run: config -> data -> method.fit -> the one results path, in a run directory."""

from __future__ import annotations

import datetime as _dt
import os
from typing import Any, Mapping, Sequence

import yaml

from ..config import MethodConfig, RunConfig
from ..data.dataset import Data
from ..errors import ConfigError
from ..methods.base import Method, create_method
from ..serialization import atomic_write_text, read_json
from ..training.checkpoint import RunDir
from .provenance import provenance
from .results import record_result

__all__ = ["build_method", "provenance", "run_training", "default_run_name", "load_results"]


def build_method(method: MethodConfig, model: Mapping[str, Any] | None, train: Mapping[str, Any], seed: int, **overrides: Any) -> Method:
    """A method from its config: shared ``train`` settings, then the method's own ``train``,
    then ``overrides`` (method hyperparameters or TrainConfig fields such as ``epochs``).
    ``model=None``: the method's own default (the architecture searches build their own networks)."""
    shape = {"model": dict(model)} if model is not None else {}
    built = create_method(method.name, **shape, seed=seed, train={**dict(train), **method.train}, **{**method.params, **overrides})
    return built if built.params != method.params else built.adopt(method.hyperparameters)  # validated once, by the config


def default_run_name(cfg: RunConfig) -> str:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    data = cfg.data.name or os.path.splitext(os.path.basename(cfg.data.npz or cfg.data.csv or "data"))[0]
    spec = cfg.method.model or cfg.model
    model = spec.name or (spec.factory or "model").split(":")[-1]
    return cfg.name or f"{cfg.method.display}-{model}-{data}-s{cfg.seed}-{stamp}"


def _resolved(cfg: RunConfig) -> dict[str, Any]:
    return cfg.model_dump(mode="json", exclude_none=True)


def run_training(cfg: RunConfig, run_dir: str, *, resume: bool = False, data: Data | None = None, callbacks: Sequence[Any] = (),
                 plots: bool = True, on_start: Any = None) -> dict[str, Any]:
    """Train ``cfg.method`` into ``run_dir`` (resuming from its checkpoints when ``resume``).

    Writes ``config.yaml`` (the resolved config), ``metrics.jsonl``, ``checkpoints/``,
    ``ensemble.safetensors``, ``results.json`` (the row of
    :func:`~ensemblekit.experiments.results.record_result`, with the resolved ``config`` and the
    ``evaluation`` its block asks for) and, unless ``plots=False``, the standard plots and the
    method's own report. Held-out classes of ``cfg.evaluation`` are removed from ``data`` first.

    Returns:
        The row.
    """
    config_path = os.path.join(run_dir, "config.yaml")
    if os.path.exists(config_path) and not resume:
        raise ConfigError(f"{run_dir} already holds a run; resume it with --resume {run_dir} or choose another directory")
    from ..evaluation.run import check_evaluation, prepare_data

    data = prepare_data(data if data is not None else cfg.data.load(), cfg.evaluation)  # held-out classes leave the training data
    check_evaluation(cfg.evaluation, data)
    method = build_method(cfg.method, cfg.method.model_spec(cfg.model), cfg.train.model_dump(exclude_unset=True), cfg.seed)
    method.check(data)  # a bad config fails here, before the run directory exists
    if on_start is not None:
        on_start()
    RunDir(run_dir)  # creates the run folder (and its checkpoints/)
    if not os.path.exists(config_path):
        atomic_write_text(config_path, yaml.safe_dump(_resolved(cfg), sort_keys=False))
    method.fit(data, run_dir=run_dir, resume=resume, callbacks=callbacks)
    return record_result(method, data, run_dir, label=cfg.method.display, extra={"config": _resolved(cfg)}, plots=plots, report=plots,
                         evaluation=cfg.evaluation)


def load_results(run_dir: str) -> dict[str, Any]:
    return read_json(os.path.join(run_dir, "results.json"))
