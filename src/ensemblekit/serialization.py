"""Atomic files and tensor storage without pickle (safetensors + JSON)."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Mapping

import torch
from safetensors import safe_open
from safetensors.torch import save as _st_save

from .errors import DataError

__all__ = ["atomic_write_bytes", "atomic_write_text", "write_json", "read_json", "save_tensors", "load_tensors", "load_metadata", "copy_state_"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _sweep_temporaries(folder: str, base: str) -> None:
    """Remove temporary files of ``base`` left by writers that died (a kill during a write)."""
    prefix = f".tmp-{base}."
    for name in os.listdir(folder):
        if not name.startswith(prefix):
            continue
        pid = name[len(prefix):].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            try:
                os.unlink(os.path.join(folder, name))
            except OSError:
                pass


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to a temporary file in the same folder, fsync it, then rename over ``path``.

    A reader (or a resumed run after a kill) sees either the old file or the new one, never
    half. The file gets the permissions the process's umask gives new files (so a shared
    output folder stays readable by the group), and temporary files that a killed writer
    left behind are removed after the next successful write.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{base}.{os.getpid()}.", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as exc:  # a full disk, a read-only folder: name the file we were writing
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise OSError(exc.errno, exc.strerror or str(exc), path) from exc
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _sweep_temporaries(folder, base)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    return str(obj)


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def save_tensors(path: str | os.PathLike[str], tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, Any] | None = None) -> None:
    """Save named tensors (and JSON metadata) to a safetensors file, atomically."""
    plain = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    meta = {"json": json.dumps(metadata, default=_json_default)} if metadata is not None else None
    atomic_write_bytes(path, _st_save(plain, metadata=meta))


def _own_storage(t: torch.Tensor) -> torch.Tensor:
    """``t`` in fresh contiguous storage of its own, from torch's allocator (64-byte aligned on CPU).

    On CPU safetensors hands out views into one private mapping of the whole file, each at
    the offset the file gives it: aligned only to its element size, and shifted by the
    length of the JSON header (a checkpoint's holds wall times), so the offsets change from
    one checkpoint to the next. A resumed optimizer keeps the tensors it is given as its
    state and a loaded ensemble computes on its own, so without a copy a resumed or
    reloaded run would compute on memory laid out unlike an uninterrupted run's (BLAS
    kernels may choose their path by alignment) and keep the old file mapped. Tensors
    loaded onto an accelerator are fresh copies already.
    """
    return t.clone(memory_format=torch.contiguous_format) if t.device.type == "cpu" else t


def load_tensors(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], Any]:
    """Load a file written by :func:`save_tensors`: ``(tensors, metadata)``. Never unpickles.

    Every tensor has storage of its own, laid out as a freshly made tensor is
    (:func:`_own_storage`), so a resumed run computes on memory like an uninterrupted one.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"file not found: {path}")
    try:
        with safe_open(path, framework="pt", device=str(device)) as f:
            tensors = {k: _own_storage(f.get_tensor(k)) for k in f.keys()}
            raw = (f.metadata() or {}).get("json")
    except Exception as exc:  # SafetensorError, OSError
        raise DataError(f"{path}: not a readable safetensors file ({exc})") from exc
    try:
        return tensors, (json.loads(raw) if raw else None)
    except ValueError as exc:
        raise DataError(f"{path}: its JSON metadata is malformed ({exc})") from None


def load_metadata(path: str | os.PathLike[str]) -> Any:
    """The JSON metadata of a file written by :func:`save_tensors`, without reading its tensors.

    Raises:
        DataError: as :func:`load_tensors` (no such file, not safetensors, malformed JSON).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"file not found: {path}")
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            raw = (f.metadata() or {}).get("json")
    except Exception as exc:  # SafetensorError, OSError
        raise DataError(f"{path}: not a readable safetensors file ({exc})") from exc
    try:
        return json.loads(raw) if raw else None
    except ValueError as exc:
        raise DataError(f"{path}: its JSON metadata is malformed ({exc})") from None


@torch.no_grad()
def copy_state_(targets: Mapping[str, torch.Tensor], saved: Mapping[str, torch.Tensor], what: str = "saved state") -> None:
    """Copy ``saved[name]`` into every ``targets[name]`` in place (resume, load).

    Raises:
        DataError: a missing tensor or a shape mismatch, naming the tensor.
    """
    for name, target in targets.items():
        if name not in saved:
            raise DataError(f"{what} lacks tensor {name!r}")
        if saved[name].shape != target.shape:
            raise DataError(f"{what}: tensor {name!r} has shape {tuple(saved[name].shape)}, expected {tuple(target.shape)}")
        target.copy_(saved[name])
