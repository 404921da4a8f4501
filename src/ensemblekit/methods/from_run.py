"""A method that starts from a trained run: what it reads, and what it refuses before anything is written.

Post-hoc methods (``laplace``/``laplace_ensemble`` with ``from_run:``, a distilled student's
teacher) take the predictor a finished run left in ``RUN/ensemble.safetensors`` instead of
training one. :func:`load_trained_run` reads it without running code the file names and checks
that it fits the data the method is given: the run must have finished, been trained for the same
task, on the same data (the ``digest`` its ``results.json`` records, :meth:`ensemblekit.data.Data.digest`),
and give one output per class (two per target for a regression head).
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Sequence

import torch

from ..data.dataset import Data
from ..errors import ConfigError
from ..predictors import format_family, load_predictor
from ..serialization import load_metadata, read_json

__all__ = ["data_digest", "load_trained_run", "check_trained_run", "run_digest"]


def data_digest(data: Data) -> str | None:
    """``data.digest()``, or ``None`` for data that cannot be hashed (a loader without a ``key``)."""
    try:
        return data.digest()
    except Exception:  # a DataLoader no key names: nothing to compare a run against
        return None


def run_digest(run_dir: Any) -> str | None:
    """SHA-256 of the run's ``ensemble.safetensors`` (``None`` when there is none yet): what a cell
    that reads the run is keyed by, so that a run trained again is never mistaken for the old one."""
    path = os.path.join(run_dir, "ensemble.safetensors") if isinstance(run_dir, str) and run_dir else None
    if path is None or not os.path.isfile(path):
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_trained_run(run_dir: Any, data: Data, who: str) -> str:
    """The path of the run's ``ensemble.safetensors`` after the checks that need no loading.

    Raises:
        ConfigError: not a finished run, a run of the other task, or a run trained on other data.
    """
    if not isinstance(run_dir, str) or not run_dir:
        raise ConfigError(f"{who}: from_run must be a run directory, got {run_dir!r}")
    path = os.path.join(run_dir, "ensemble.safetensors")
    if not os.path.isfile(path):
        raise ConfigError(f"{who}: {run_dir!r} is not a finished run (no ensemble.safetensors)")
    row_path = os.path.join(run_dir, "results.json")
    row = read_json(row_path) if os.path.isfile(row_path) else {}
    info = row.get("data") if isinstance(row, dict) else None
    if isinstance(info, dict):
        task = info.get("task", "classification")
        if task != data.task:
            raise ConfigError(f"{who}: {run_dir!r} was trained for {task}, and this data is {data.task}")
        theirs, ours = info.get("digest"), data_digest(data)
        if theirs is not None and ours is not None and theirs != ours:
            raise ConfigError(f"{who}: {run_dir!r} was trained on other data (data digest {theirs} there, {ours} here: "
                              f"{info.get('name')!r} with sizes {info.get('sizes')})")
    return path


def load_trained_run(run_dir: Any, data: Data, who: str, device: str | torch.device = "cpu", kinds: Sequence[str] | None = None) -> Any:
    """The predictor of a finished run, checked against ``data`` (see the module docstring).

    Args:
        kinds: the predictor kinds (file-format families, :func:`ensemblekit.predictors.format_family`)
            the caller can use, e.g. ``["ensemblekit.ensemble"]`` for independently trained networks
            (default: any).

    Raises:
        ConfigError: see :func:`check_trained_run`; a kind not in ``kinds``; outputs that do not match
            the data's classes or targets.
        DataError: a file ensemblekit did not write.
    """
    path = check_trained_run(run_dir, data, who)
    if kinds is not None:
        meta = load_metadata(path)
        family = format_family(meta.get("format") if isinstance(meta, dict) else None)
        if family not in kinds:
            raise ConfigError(f"{who}: {run_dir!r} holds a {family or 'unknown'} predictor; this takes {' or '.join(kinds)} "
                              "(a run of independently trained networks)")
    pred = load_predictor(path, device=device)
    readout = getattr(pred, "readout", None)
    if bool(getattr(readout, "is_regression", False)) != data.is_regression:
        raise ConfigError(f"{who}: {run_dir!r} holds a {'classification' if data.is_regression else 'regression'} "
                          f"predictor, and this data is {data.task}")
    x = data.train.x[:2] if data.train.in_memory else data.train.tensors()[0][:2]
    if readout is not None and readout.scaling is not None:
        x = readout.inputs(x)
    pred.eval()
    try:
        with torch.no_grad():
            width = int(pred.logits(x.to(pred.device)).shape[-1])
    except Exception as exc:  # the network's own shape error
        raise ConfigError(f"{who}: the network of {run_dir!r} cannot take {data.name} examples of shape {tuple(data.input_shape)}: {exc}") from None
    want = (data.num_outputs, 2 * data.num_outputs) if data.is_regression else (data.num_classes,)
    if width not in want:
        raise ConfigError(f"{who}: the network of {run_dir!r} gives {width} outputs, and {data.name} needs "
                          f"{' or '.join(map(str, want))} ({'targets' if data.is_regression else 'classes'})")
    return pred
