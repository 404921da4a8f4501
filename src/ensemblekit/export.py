"""Ship a trained ensemble as one graph that runs without ensemblekit.

:func:`export` wraps a predictor in a plain ``nn.Module`` whose forward takes a batch
``(B, *input_shape)`` and returns the ensemble's mean probabilities ``(B, C)`` (with
``members=True`` a pair: the mean and the members' probabilities ``(M, B, C)``; a regression
ensemble returns its mixture's mean and total variance in the targets' units, with the inputs'
standardisation inside the graph, and with ``members=True`` also the members' means and
variances), then writes it in one of three formats:

- ``export``: a ``torch.export`` ExportedProgram (``.pt2``) with a dynamic batch
  dimension; load with ``torch.export.load(path).module()``.
- ``torchscript``: a traced TorchScript module (``.pt``); load with ``torch.jit.load(path)``.
- ``onnx``: an ONNX graph (``.onnx``, the ``onnx`` extra: ``pip install -e ".[onnx]"``),
  dynamic batch; run it with onnxruntime.

Each predictor kind says what it exports (``export_module``, see :mod:`ensemblekit.predictors`):
members of an :class:`~ensemblekit.ensemble.Ensemble` become ordinary modules (a
heterogeneous EdgeNES ensemble too: one module per member), in eval mode, BatchNorm with
its running statistics. A network whose members share one forward pass (BatchEnsemble,
Packed, MIMO, Masksembles) is exported as that network. MC-dropout's members are random
passes, which no static graph reproduces: it is refused with a clear error. This module
knows no kind: it writes whatever module the predictor gives.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from .errors import ConfigError
from .predictors import EnsembleModule

__all__ = ["FORMATS", "EnsembleModule", "export"]

FORMATS = {"export": ".pt2", "torchscript": ".pt", "onnx": ".onnx"}


def _module(predictor: Any, with_members: bool) -> nn.Module:
    """The plain module the predictor's kind exports (``export_module``)."""
    export_module = getattr(predictor, "export_module", None)
    if export_module is None:
        raise ConfigError(f"cannot export a {type(predictor).__name__}")
    return export_module(with_members)


def export(predictor: Any, path: str, example: torch.Tensor | None = None, *, format: str = "export", members: bool = False) -> str:
    """Write ``predictor`` as one graph in ``format`` (see the module docstring) and return ``path``.

    Args:
        predictor: a predictor whose kind exports a module (an Ensemble, a one-network
            ensemble such as a SharedEnsemble).
        path: the file to write (its folder is created).
        example: a batch of inputs ``(B, *input_shape)`` to trace with (default: zeros of the
            input shape the predictor's model spec records).
        format: ``export`` | ``torchscript`` | ``onnx``.
        members: also return the members' probabilities.

    Raises:
        ConfigError: an unknown format, a predictor that cannot be exported, ONNX without the extra.
    """
    if format not in FORMATS:
        raise ConfigError(f"export format must be one of {', '.join(FORMATS)}, got {format!r}")
    module = _module(predictor, members)
    if example is None:
        from .evaluation.predict import predictor_input_shape

        shape = predictor_input_shape(predictor)
        if shape is None:
            raise ConfigError("the predictor does not record its input shape: pass an example batch")
        example = torch.zeros(2, *shape)
    x = example.detach().to("cpu").float()
    if x.shape[0] < 2:
        x = torch.cat([x, x])
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    root, ext = os.path.splitext(path)
    tmp = f"{root}.tmp-{os.getpid()}{ext}"  # the format's own extension: torch.export checks it
    try:
        with torch.no_grad():
            if format == "export":
                batch = torch.export.Dim("batch", min=1)
                program = torch.export.export(module, (x,), dynamic_shapes=({0: batch},))
                torch.export.save(program, tmp)
            elif format == "torchscript":
                traced = torch.jit.trace(module, (x,), check_trace=False)
                traced.save(tmp)
            else:
                _onnx(module, x, tmp, members)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _onnx(module: nn.Module, x: torch.Tensor, path: str, members: bool) -> None:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise ConfigError('ONNX export needs the onnx extra: pip install -e ".[onnx]"') from None
    outputs = list(getattr(module, "output_names", ["probs", "member_probs"] if members else ["probs"]))
    # the torch.export-based exporter (torch's default since 2.9; it needs onnxscript, part of the extra)
    program = torch.onnx.export(module, (x,), input_names=["x"], output_names=outputs,
                                dynamic_shapes=({0: torch.export.Dim("batch", min=1)},), dynamo=True, verbose=False)
    program.save(path)
