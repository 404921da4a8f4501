"""Out-of-distribution inputs, offline: held-out classes, synthetic inputs, a user's ``.npz``.

- **Held-out classes** (any dataset): :func:`hold_out_classes` removes classes from every
  split and relabels the rest ``0..C'-1``; the test examples of the removed classes are the
  OOD set (``Data.held_out``). The model never sees those classes, so they are unknown to it
  in the sense that matters, and they come from the same sensor and preprocessing.
- **Synthetic** (:data:`OOD_SETS`): ``noise`` (every feature uniform in the training inputs'
  range), ``constant`` (each input one value drawn from that range), ``permuted`` (training
  inputs with their positions — pixels or time steps — permuted, channels kept together:
  the same marginal values, no structure).
- **A file**: ``{npz: path}`` with an array ``x`` of the model's input shape (labels, if any,
  are ignored); read without unpickling.

Every set is deterministic for a seed. Detection is always measured on the in-distribution
test split mixed with the OOD set (:mod:`ensemblekit.metrics.ood`).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from ..errors import ConfigError, DataError
from ..registry import Registry
from ..seeding import derive_seed
from .dataset import Data, Split

__all__ = ["OOD_SETS", "register_ood_set", "hold_out_classes", "ood_name", "ood_inputs", "load_ood_npz"]

OodFn = Callable[[torch.Tensor, int, torch.Generator], torch.Tensor]
OOD_SETS: Registry[OodFn] = Registry("OOD set")


def register_ood_set(name: str) -> Callable[[OodFn], OodFn]:
    """Register ``fn(train_x, n, generator) -> (n, *input_shape)`` synthetic OOD inputs."""
    return OOD_SETS.register(name)


def _range(x: torch.Tensor) -> tuple[float, float]:
    lo, hi = (float(v) for v in torch.aminmax(x))
    return lo, hi


@register_ood_set("noise")
def _noise(x: torch.Tensor, n: int, g: torch.Generator) -> torch.Tensor:
    lo, hi = _range(x)
    return lo + (hi - lo) * torch.rand((n, *x.shape[1:]), generator=g)


@register_ood_set("constant")
def _constant(x: torch.Tensor, n: int, g: torch.Generator) -> torch.Tensor:
    lo, hi = _range(x)
    value = lo + (hi - lo) * torch.rand((n,) + (1,) * (x.dim() - 1), generator=g)
    return value.expand(n, *x.shape[1:]).clone()


@register_ood_set("permuted")
def _permuted(x: torch.Tensor, n: int, g: torch.Generator) -> torch.Tensor:
    pick = torch.randint(0, x.shape[0], (n,), generator=g)
    src = x[pick].reshape(n, x.shape[1], -1) if x.dim() > 2 else x[pick].reshape(n, 1, -1)
    order = torch.rand(n, src.shape[-1], generator=g).argsort(-1)  # one permutation of the positions per example
    out = src.gather(-1, order.unsqueeze(1).expand_as(src))
    return out.reshape(n, *x.shape[1:])


def hold_out_classes(data: Data, classes: Sequence[int]) -> Data:
    """``data`` without ``classes``: the rest relabelled ``0..C'-1`` in order, the removed test examples in ``held_out``.

    Args:
        data: in-memory splits. classes: labels in ``0..C-1`` to remove (at least two classes must remain).

    Returns:
        A new :class:`Data` with ``num_classes = C - len(classes)``, ``held_out`` the test
        examples of the removed classes (original labels), and ``info`` recording
        ``held_out_classes``, ``class_map`` (original -> new label) and ``num_classes_original``.

    Raises:
        ConfigError: a class outside ``0..C-1``, repeated, or fewer than two left.
        DataError: a split given as a DataLoader, or a removed class absent from the test split.
    """
    C = data.num_classes
    held = sorted(int(c) for c in classes)
    if not held:
        raise ConfigError("held_out_classes must name at least one class")
    if len(set(held)) != len(held):
        raise ConfigError(f"held_out_classes repeats a class: {list(classes)}")
    bad = [c for c in held if not 0 <= c < C]
    if bad:
        raise ConfigError(f"held_out_classes {bad} are not classes of {data.name} (labels 0..{C - 1})")
    if C - len(held) < 2:
        raise ConfigError(f"held_out_classes {held} leaves {C - len(held)} of {C} classes; at least two must remain to train on")
    kept = [c for c in range(C) if c not in held]
    lookup = torch.full((C,), -1, dtype=torch.int64)
    lookup[kept] = torch.arange(len(kept))

    def split(s: Split | None, name: str) -> Split | None:
        if s is None:
            return None
        if not s.in_memory:
            raise DataError(f"held_out_classes needs in-memory splits; the {name} split is a DataLoader")
        keep = lookup[s.y] >= 0
        if not bool(keep.any()):
            raise DataError(f"held_out_classes {held} removes every example of the {name} split")
        return Split(s.x[keep], lookup[s.y[keep]])

    test_x, test_y = data.test.tensors()
    out_mask = lookup[test_y] < 0
    if not bool(out_mask.any()):
        raise DataError(f"the test split of {data.name} has no examples of classes {held}: nothing to detect")
    info = {**data.info, "held_out_classes": held, "class_map": {str(c): i for i, c in enumerate(kept)}, "num_classes_original": C,
            "note": f"trained, validated and tested on classes {kept} only (relabelled 0..{len(kept) - 1}); the test examples "
                    f"of classes {held} are the held-out OOD set"}
    return Data(train=split(data.train, "train"), test=split(data.test, "test"), val=split(data.val, "val"),  # type: ignore[arg-type]
                num_classes=len(kept), input_shape=data.input_shape, name=data.name, split_seed=data.split_seed, info=info,
                held_out=Split(test_x[out_mask], test_y[out_mask]))


def ood_name(spec: Any) -> str:
    """The label of an OOD spec in results: ``noise``, ``held_out_7-8-9``, ``npz:<file stem>``."""
    if isinstance(spec, str):
        return spec
    if isinstance(spec, Mapping) and "held_out_classes" in spec:
        return "held_out_" + "-".join(str(int(c)) for c in spec["held_out_classes"])
    if isinstance(spec, Mapping) and "npz" in spec:
        return "npz:" + os.path.splitext(os.path.basename(str(spec["npz"])))[0]
    raise ConfigError(f"an OOD set is a name ({', '.join(OOD_SETS.names())}), {{held_out_classes: [...]}} or {{npz: path}}; got {spec!r}")


def load_ood_npz(path: str, input_shape: Sequence[int]) -> torch.Tensor:
    """The array ``x`` of an ``.npz`` file as float32 ``(N, *input_shape)`` (never unpickled).

    Raises:
        DataError: missing file, no ``x``, object arrays, wrong shape, non-numeric or non-finite values.
    """
    if not os.path.isfile(path):
        raise DataError(f"OOD npz file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as f:
            if "x" not in f.files:
                raise DataError(f"{path}: no array 'x' (found {sorted(f.files)})")
            arr = f["x"]
    except DataError:
        raise
    except ValueError as exc:
        raise DataError(f"{path}: cannot read without unpickling (object arrays are not allowed): {exc}") from None
    except Exception as exc:  # noqa: BLE001 - zipfile.BadZipFile, OSError, ...
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{path}: x must be numeric, got dtype {arr.dtype}")
    shape = tuple(int(s) for s in input_shape)
    if arr.ndim == len(shape):  # one example
        arr = arr[None]
    if tuple(arr.shape[1:]) != shape or arr.shape[0] == 0:
        raise DataError(f"{path}: x has shape {tuple(arr.shape)}, expected (N, {', '.join(map(str, shape))}) like the model's inputs")
    x = torch.as_tensor(arr).to(torch.float32)
    if not torch.isfinite(x).all():
        raise DataError(f"{path}: x holds NaN or infinite values")
    return x


def ood_inputs(data: Data, spec: Any, size: int | None = None, seed: int = 0) -> torch.Tensor:
    """The OOD inputs ``(N, *input_shape)`` of ``spec`` for ``data`` (``size``: at most that many; default the test size).

    Args:
        data: the in-distribution data (after :func:`hold_out_classes` for a held-out spec).
        spec: ``"noise" | "constant" | "permuted"`` (any name in :data:`OOD_SETS`),
            ``{"held_out_classes": [...]}`` or ``{"npz": path}``.
        size: the number of synthetic inputs, and the most taken from a held-out set or a file.
        seed: the seed of the synthetic draws.

    Raises:
        ConfigError: an unknown spec, or held-out classes that ``data`` was not built with.
    """
    n = int(size or len(data.test))
    name = ood_name(spec)
    if isinstance(spec, Mapping) and "held_out_classes" in spec:
        if data.held_out is None or data.info.get("held_out_classes") != sorted(int(c) for c in spec["held_out_classes"]):
            raise ConfigError(f"OOD set {name}: the data was not built with those classes held out (hold_out_classes first)")
        return data.held_out.tensors()[0][:n]
    if isinstance(spec, Mapping) and "npz" in spec:
        return load_ood_npz(str(spec["npz"]), data.input_shape)[:n]
    fn = OOD_SETS.get(str(spec))
    x_train = data.train.tensors()[0]
    return fn(x_train, n, torch.Generator().manual_seed(derive_seed(seed, "ood", name))).to(torch.float32)
