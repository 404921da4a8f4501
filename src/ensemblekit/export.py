"""Ship a trained ensemble as one graph that runs without ensemblekit.

:func:`export` wraps a predictor in a plain ``nn.Module`` whose forward takes a batch
``(B, *input_shape)`` and returns the ensemble's mean probabilities ``(B, C)`` (with
``members=True`` a pair: the mean and the members' probabilities ``(M, B, C)``), then writes
it in one of three formats:

- ``export``: a ``torch.export`` ExportedProgram (``.pt2``) with a dynamic batch
  dimension; load with ``torch.export.load(path).module()``.
- ``torchscript``: a traced TorchScript module (``.pt``); load with ``torch.jit.load(path)``.
- ``onnx``: an ONNX graph (``.onnx``, the ``onnx`` extra: ``pip install -e ".[onnx]"``),
  dynamic batch; run it with onnxruntime.

Members of an :class:`~ensemblekit.ensemble.Ensemble` become ordinary modules (a
heterogeneous EdgeNES ensemble too: one module per member), in eval mode, BatchNorm with
its running statistics. A network whose members share one forward pass (BatchEnsemble,
Packed, MIMO, Masksembles) is exported as that network. MC-dropout's members are random
passes, which no static graph reproduces: it is refused with a clear error.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import torch
from torch import nn

from .errors import ConfigError

__all__ = ["FORMATS", "EnsembleModule", "export"]

FORMATS = {"export": ".pt2", "torchscript": ".pt", "onnx": ".onnx"}


class EnsembleModule(nn.Module):
    """``x -> mean_m softmax(f_m(x))`` (and the members' probabilities with ``members``)."""

    def __init__(self, members: Sequence[nn.Module] | None = None, shared: nn.Module | None = None, with_members: bool = False) -> None:
        super().__init__()
        self.members = nn.ModuleList(members or [])
        self.shared = shared
        self.with_members = with_members

    def forward(self, x: torch.Tensor) -> Any:
        if self.shared is not None:
            probs = torch.softmax(self.shared(x), dim=-1)  # (M, B, C) from one network
        else:
            probs = torch.stack([torch.softmax(m(x), dim=-1) for m in self.members])
        mean = probs.mean(0)
        return (mean, probs) if self.with_members else mean


def _module(predictor: Any, with_members: bool) -> EnsembleModule:
    from .efficient.mcdropout import MCDropout
    from .efficient.shared import SharedEnsemble
    from .ensemble import Ensemble

    if isinstance(predictor, MCDropout):
        raise ConfigError("MC-dropout's members are random dropout passes, which a static graph cannot reproduce; "
                          "export the network without dropout or use `ensemblekit predict`")
    if isinstance(predictor, SharedEnsemble):
        import copy

        return EnsembleModule(shared=copy.deepcopy(predictor.net).eval(), with_members=with_members).eval()
    if isinstance(predictor, Ensemble):
        return EnsembleModule([m.eval() for m in predictor.to("cpu").to_modules()], with_members=with_members).eval()
    raise ConfigError(f"cannot export a {type(predictor).__name__}")


def export(predictor: Any, path: str, example: torch.Tensor | None = None, *, format: str = "export", members: bool = False) -> str:
    """Write ``predictor`` as one graph in ``format`` (see the module docstring) and return ``path``.

    Args:
        predictor: an Ensemble or a one-network ensemble (SharedEnsemble).
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
    tmp = f"{path}.tmp-{os.getpid()}"
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
    outputs = ["probs", "member_probs"] if members else ["probs"]
    # the torch.export-based exporter (torch's default since 2.9; it needs onnxscript, part of the extra)
    program = torch.onnx.export(module, (x,), input_names=["x"], output_names=outputs,
                                dynamic_shapes=({0: torch.export.Dim("batch", min=1)},), dynamo=True, verbose=False)
    program.save(path)
