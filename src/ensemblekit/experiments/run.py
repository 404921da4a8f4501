"""One training run: config -> data -> method.fit -> ensemble, results.json and plots in a run directory."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
from typing import Any, Mapping, Sequence

import torch
import yaml

from ..config import MethodConfig, RunConfig
from ..data.dataset import Data
from ..errors import ConfigError
from ..methods.base import Method, create_method
from ..metrics.evaluate import evaluate
from ..report.plots import reliability_diagram, size_curve_plot, training_curves
from ..serialization import atomic_write_text, read_json, write_json
from ..training.checkpoint import RunDir

__all__ = ["build_method", "provenance", "run_training", "finish_run", "default_run_name"]


def build_method(method: MethodConfig, model: Mapping[str, Any], train: Mapping[str, Any], seed: int, **overrides: Any) -> Method:
    """A method from its config: shared ``train`` settings, then the method's own ``train``,
    then ``overrides`` (method hyperparameters or TrainConfig fields such as ``epochs``)."""
    return create_method(method.name, model=dict(model), seed=seed, train={**dict(train), **method.train}, **{**method.params, **overrides})


def provenance() -> dict[str, Any]:
    """What produced a result: versions, code commit, machine, time."""
    from .. import __version__

    commit = None
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    return {
        "ensemblekit": __version__,
        "commit": commit,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "time": _dt.datetime.now().isoformat(timespec="seconds"),
    }


def default_run_name(cfg: RunConfig) -> str:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    data = cfg.data.name or os.path.splitext(os.path.basename(cfg.data.npz or "data"))[0]
    spec = cfg.method.model or cfg.model
    model = spec.name or (spec.factory or "model").split(":")[-1]
    return cfg.name or f"{cfg.method.display}-{model}-{data}-s{cfg.seed}-{stamp}"


def _resolved(cfg: RunConfig) -> dict[str, Any]:
    return cfg.model_dump(mode="json", exclude_none=True)


def run_training(cfg: RunConfig, run_dir: str, *, resume: bool = False, data: Data | None = None, callbacks: Sequence[Any] = (), plots: bool = True) -> dict[str, Any]:
    """Train ``cfg.method`` into ``run_dir`` (resuming from its checkpoints when ``resume``).

    Writes ``config.yaml`` (the resolved config), ``metrics.jsonl``, ``checkpoints/``,
    ``ensemble.safetensors``, ``results.json`` and (unless ``plots=False``) plots.
    Returns the results dict.
    """
    rd = RunDir(run_dir)
    config_path = rd.file("config.yaml")
    if os.path.exists(config_path) and not resume:
        raise ConfigError(f"{run_dir} already holds a run; resume it with --resume {run_dir} or choose another directory")
    if not os.path.exists(config_path):
        atomic_write_text(config_path, yaml.safe_dump(_resolved(cfg), sort_keys=False))
    data = data if data is not None else cfg.data.load()
    method = build_method(cfg.method, cfg.method.model_spec(cfg.model), cfg.train.model_dump(exclude_unset=True), cfg.seed)
    method.fit(data, run_dir=run_dir, resume=resume, callbacks=callbacks)
    return finish_run(method, data, rd, {"config": _resolved(cfg)}, plots=plots)


def finish_run(method: Method, data: Data, rd: RunDir, extra: Mapping[str, Any] | None = None, plots: bool = True) -> dict[str, Any]:
    """Save the ensemble, evaluate it on test (and val), write results.json and the plots."""
    ens = method.ensemble_
    ens.save(rd.file("ensemble.safetensors"))
    test = evaluate(ens, data.test)
    results: dict[str, Any] = {
        "method": method.name,
        "members": ens.num_members,
        "members_info": ens.members_info,
        "wall_s": round(method.train_seconds_, 3),
        "cost_s": {k: round(v, 3) for k, v in method.cost_.items()},
        "test": test,
        "data": data.describe(),
        "provenance": provenance(),
        **dict(extra or {}),
    }
    if data.val is not None:
        results["val"] = evaluate(ens, data.val)
    write_json(rd.file("results.json"), results)
    if not plots:
        return results
    probs = ens.predict_proba(data.test).cpu()
    y = data.test.tensors()[1]
    reliability_diagram(probs.mean(0), y, rd.file("reliability.png"), title=f"{method.name}: test reliability")
    size_curve_plot({method.name: test["size_curve"]}, rd.file("size_curve.png"), title=f"{method.name}: test error vs members")
    if method.history_:
        training_curves(method.history_, rd.file("training_curves.png"), title=method.name)
    method.report(rd, data)
    return results


def load_results(run_dir: str) -> dict[str, Any]:
    return read_json(os.path.join(run_dir, "results.json"))
