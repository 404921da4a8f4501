"""Run directories: resolved config, ``metrics.jsonl``, atomic checkpoints per training stage.

A run is made of named *stages* (``train`` for one ensemble; ``pretrain`` and ``fge``
for FGE; ``member_3`` for the fourth boosting round...). Each stage checkpoints to
``checkpoints/<stage>.safetensors`` (tensors) with its JSON state embedded; a stage
that finished is loaded instead of retrained, so ``--resume`` continues a killed run
from the last completed epoch of the stage that was running.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import torch

from ..errors import DataError
from ..serialization import atomic_write_text, load_tensors, save_tensors

__all__ = ["RunDir", "flatten_state", "unflatten_state"]


def flatten_state(state: Mapping[str, Any], prefix: str = "") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split a nested state dict into tensors (``"a/b/0"`` keys) and a JSON-able remainder."""
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, Any] = {}
    for key, value in state.items():
        name = f"{prefix}{key}"
        if isinstance(value, torch.Tensor):
            tensors[name] = value
            plain[str(key)] = {"__tensor__": True}
        elif isinstance(value, Mapping):
            t, p = flatten_state(value, name + "/")
            tensors.update(t)
            plain[str(key)] = {"__dict__": p}
        elif isinstance(value, (list, tuple)) and value and all(isinstance(v, torch.Tensor) for v in value):
            for i, v in enumerate(value):
                tensors[f"{name}/{i}"] = v
            plain[str(key)] = {"__tensor_list__": len(value)}
        else:
            plain[str(key)] = value
    return tensors, plain


def unflatten_state(tensors: Mapping[str, torch.Tensor], plain: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Inverse of :func:`flatten_state`."""
    out: dict[str, Any] = {}
    for key, value in plain.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and "__dict__" in value:
            out[key] = unflatten_state(tensors, value["__dict__"], name + "/")
        elif isinstance(value, Mapping) and "__tensor_list__" in value:
            out[key] = [tensors[f"{name}/{i}"] for i in range(value["__tensor_list__"])]
        elif isinstance(value, Mapping) and "__tensor__" in value:
            out[key] = tensors[name]
        else:
            out[key] = value
    return out


class RunDir:
    """A run's folder: ``config.yaml``, ``metrics.jsonl``, ``checkpoints/``, ``results.json``, plots.

    Args:
        path: the folder (created).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        os.makedirs(os.path.join(self.path, "checkpoints"), exist_ok=True)

    def file(self, *parts: str) -> str:
        return os.path.join(self.path, *parts)

    # ------------------------------------------------------------------ metrics log
    @property
    def metrics_path(self) -> str:
        return self.file("metrics.jsonl")

    def log(self, record: Mapping[str, Any]) -> None:
        """Append one JSON line to ``metrics.jsonl``."""
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, default=float) + "\n")

    def truncate_log(self, stage: str, after_epoch: int) -> None:
        """Drop lines of ``stage`` logged after ``after_epoch`` (they are replayed on resume)."""
        if not os.path.exists(self.metrics_path):
            return
        kept = []
        with open(self.metrics_path, encoding="utf-8") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a kill
                if rec.get("stage") == stage and rec.get("epoch", 0) > after_epoch:
                    continue
                kept.append(json.dumps(rec) + "\n")
        atomic_write_text(self.metrics_path, "".join(kept))

    def read_log(self) -> list[dict[str, Any]]:
        if not os.path.exists(self.metrics_path):
            return []
        out = []
        with open(self.metrics_path, encoding="utf-8") as f:
            for line in f:
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return out

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_path(self, stage: str) -> str:
        return self.file("checkpoints", f"{stage}.safetensors")

    def save_checkpoint(self, stage: str, state: Mapping[str, Any]) -> None:
        """Save a nested state (tensors + JSON-able values) atomically."""
        tensors, plain = flatten_state(state)
        save_tensors(self.checkpoint_path(stage), tensors, plain)

    def load_checkpoint(self, stage: str, device: str | torch.device = "cpu", required: tuple[str, ...] = ()) -> dict[str, Any] | None:
        """The saved state of ``stage`` (``None`` when it has none).

        Raises:
            DataError: the file is not readable, or lacks an entry of ``required`` or a tensor
                its metadata names (a damaged checkpoint: delete it to retrain the stage).
        """
        path = self.checkpoint_path(stage)
        if not os.path.exists(path):
            return None
        tensors, plain = load_tensors(path, device=device)
        if not isinstance(plain, Mapping):
            raise DataError(f"{path}: a damaged checkpoint (no state metadata); delete it to retrain stage {stage!r}")
        try:
            state = unflatten_state(tensors, plain)
        except KeyError as exc:
            raise DataError(f"{path}: a damaged checkpoint (lacks tensor {exc.args[0]!r}); delete it to retrain stage {stage!r}") from None
        missing = [k for k in required if k not in state]
        if missing:
            raise DataError(f"{path}: a damaged checkpoint (lacks {', '.join(missing)}); delete it to retrain stage {stage!r}")
        return state
