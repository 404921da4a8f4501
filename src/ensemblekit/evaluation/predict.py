"""Predictions of a trained ensemble on new inputs, with each example's uncertainty.

For members' probabilities ``p_m`` (``M x N x C``) and their mean ``p̄``:

- ``pred``: ``argmax p̄``; ``probs``: ``p̄``;
- ``entropy``: the predictive entropy ``H[p̄]`` (total uncertainty, nats);
- ``expected_entropy``: ``mean_m H[p_m]`` (the aleatoric part);
- ``mutual_information``: ``H[p̄] - mean_m H[p_m]`` (the epistemic part: the members'
  disagreement in information terms; Depeweg et al., ICML 2018);
- ``disagreement``: the share of members whose own prediction differs from ``pred``.

For a regression predictor (members' Gaussians ``N(mu_m, s2_m)``, in the targets' units) the
columns are ``mean`` (``mean_m mu_m``), ``std`` (the mixture's total std), ``aleatoric_std``
(``sqrt(mean_m s2_m)``), ``epistemic_std`` (the std of the members' means) and the central
intervals of the mixture itself (not of a moment-matched Gaussian) at 90% and 95%:
``lower_90``, ``upper_90``, ``lower_95``, ``upper_95``; with D targets each column has a
``_d`` suffix per output; ``members`` adds ``member_mean`` and ``member_std`` ``(M, N[, D])``.

:func:`predict_file` streams a file in batches: ``.npz`` (array ``x``, read without
unpickling), ``.npy`` (memory-mapped) or ``.csv`` (one example per row, its features
flattened; a header line is optional), and writes ``.csv`` (rows appended batch by batch,
memory flat in the number of rows) or ``.npz`` (arrays gathered, then written). Every
file is written to a temporary name and renamed at the end, so a bad row (NaN, wrong width)
met half-way leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from ..errors import DataError
from ..metrics.diversity import entropy_nats
from ..metrics.predictive import Gaussian
from .forward import predictive

__all__ = ["uncertainty_of", "regression_outputs", "predict_array", "read_batches", "predict_file", "predictor_input_shape"]

_COLUMNS = ("entropy", "expected_entropy", "mutual_information", "disagreement")
_LEVELS = (0.9, 0.95)


def uncertainty_of(member_probs: torch.Tensor) -> dict[str, torch.Tensor]:
    """``pred``, ``probs`` and the four per-example uncertainties of ``(M, N, C)`` probabilities."""
    p = member_probs.double()
    mean = p.mean(0)
    pred = mean.argmax(-1)
    total, expected = entropy_nats(mean), entropy_nats(p).mean(0)
    return {"pred": pred, "probs": mean, "entropy": total, "expected_entropy": expected,
            "mutual_information": (total - expected).clamp_min(0.0),
            "disagreement": (p.argmax(-1) != pred.unsqueeze(0)).double().mean(0)}


def predictor_input_shape(predictor: Any) -> tuple[int, ...] | None:
    """The example shape a saved predictor was built for (from its model spec), if it says."""
    specs = [getattr(g, "spec", None) for g in getattr(predictor, "groups", [])] or [getattr(predictor, "spec", None)]
    for spec in specs:
        shape = ((spec or {}).get("kwargs") or {}).get("input_shape") if isinstance(spec, dict) else None
        if shape:
            return tuple(int(s) for s in shape)
    return None


def regression_outputs(pd: Gaussian, members: bool = False) -> dict[str, np.ndarray]:
    """The regression columns of the module docstring from a Gaussian predictive ``(M, N[, D])``."""
    mean, var = pd.pooled()
    out = {"mean": mean, "std": var.sqrt(), "aleatoric_std": pd.aleatoric().sqrt(), "epistemic_std": pd.epistemic().sqrt()}
    for level in _LEVELS:
        lo, hi = pd.interval(level)
        out[f"lower_{level * 100:g}"], out[f"upper_{level * 100:g}"] = lo, hi
    if members:
        out["member_mean"], out["member_std"] = pd.mean.double(), pd.var.double().sqrt()
    return {k: v.double().numpy() for k, v in out.items()}


def _predictive(predictor: Any, x: torch.Tensor) -> torch.Tensor | Gaussian:
    """The members' Gaussian of a regression predictor, else the members' probabilities ``(M, N, C)``."""
    readout = getattr(predictor, "readout", None)
    try:
        if readout is not None and readout.is_regression:
            return predictive(predictor, x, batch_size=len(x))
        return predictor.predict_proba(x).cpu()
    except RuntimeError as exc:
        raise DataError(f"the ensemble cannot take inputs of shape {tuple(x.shape[1:])}: {str(exc).splitlines()[0]}") from None


def predict_array(predictor: Any, x: Any, *, batch_size: int = 1024, members: bool = False) -> dict[str, np.ndarray]:
    """Predictions and uncertainties of in-memory inputs ``x`` ``(N, *input_shape)``; with
    ``members`` also ``member_probs`` ``(M, N, C)`` (regression: ``member_mean``, ``member_std``)."""
    xt = torch.as_tensor(np.asarray(x, dtype=np.float32))
    parts = [_outputs(_predictive(predictor, xt[i:i + batch_size]), members) for i in range(0, len(xt), batch_size)]
    return {k: np.concatenate([p[k] for p in parts], axis=1 if k.startswith("member_") else 0) for k in parts[0]}


def _outputs(pd: torch.Tensor | Gaussian, members: bool) -> dict[str, np.ndarray]:
    if isinstance(pd, Gaussian):
        return regression_outputs(pd, members)
    member_probs = pd
    out = {k: v.numpy() for k, v in uncertainty_of(member_probs).items()}
    if members:
        out["member_probs"] = member_probs.double().numpy()
    return out


def _check_rows(x: np.ndarray, first_row: int, path: str) -> np.ndarray:
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise DataError(f"{path}: inputs must be numbers, got dtype {x.dtype}")
    x = np.array(x, dtype=np.float32)  # a copy: a memory-mapped .npy slice stays read-only
    bad = ~np.isfinite(x.reshape(len(x), -1)).all(1)
    if bad.any():
        raise DataError(f"{path}: row {first_row + int(np.argmax(bad))} has NaN or infinite values")
    return x


def _csv_batches(path: str, width: int, batch_size: int) -> Iterator[np.ndarray]:
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        rows: list[list[str]] = []
        line = 0
        for row in reader:
            line += 1
            if not row or all(not c.strip() for c in row):
                continue
            if line == 1 and not _numeric(row):
                continue  # a header line
            if len(row) != width:
                raise DataError(f"{path}: line {line} has {len(row)} values, the model takes {width} per example")
            rows.append(row)
            if len(rows) == batch_size:
                yield _parse(rows, path, line - len(rows) + 1)
                rows = []
        if rows:
            yield _parse(rows, path, line - len(rows) + 1)


def _numeric(row: Sequence[str]) -> bool:
    try:
        [float(c) for c in row]
        return True
    except ValueError:
        return False


def _parse(rows: list[list[str]], path: str, first_line: int) -> np.ndarray:
    try:
        return np.asarray(rows, dtype=np.float32)
    except ValueError:
        for i, row in enumerate(rows):
            if not _numeric(row):
                raise DataError(f"{path}: line {first_line + i} is not all numbers") from None
        raise


def read_batches(path: str, input_shape: Sequence[int], batch_size: int = 1024) -> Iterator[np.ndarray]:
    """Batches ``(B, *input_shape)`` float32 of the examples in ``path`` (see the module docstring).

    Raises:
        DataError: an unknown extension, a file that is missing or empty, a wrong example
            shape, non-numeric or NaN values (naming the row).
    """
    shape = tuple(int(s) for s in input_shape)
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".csv":
        width = math.prod(shape)
        row = 0
        for batch in _csv_batches(path, width, batch_size):
            yield _check_rows(batch, row, path).reshape(len(batch), *shape)
            row += len(batch)
        if row == 0:
            raise DataError(f"{path}: no examples")
        return
    if ext == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                if "x" not in z.files:
                    raise DataError(f"{path}: no array 'x' (found {', '.join(z.files) or 'none'})")
                x = z["x"]
        except (ValueError, OSError) as exc:  # object arrays (never unpickled), a damaged archive
            raise DataError(f"{path}: cannot be read as .npz ({str(exc).splitlines()[0]})") from None
    elif ext == ".npy":
        try:
            x = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise DataError(f"{path}: cannot be read as .npy ({str(exc).splitlines()[0]})") from None
    else:
        raise DataError(f"{path}: inputs must be .npz (array x), .npy or .csv, got {ext or 'no extension'}")
    if x.ndim == 0 or len(x) == 0:
        raise DataError(f"{path}: no examples")
    if tuple(x.shape[1:]) != shape and not (x.ndim == 2 and x.shape[1] == math.prod(shape)):
        raise DataError(f"{path}: examples of shape {tuple(x.shape[1:])}, the model takes {shape}")
    for i in range(0, len(x), batch_size):
        yield _check_rows(np.asarray(x[i:i + batch_size]), i, path).reshape(-1, *shape)


def predict_file(predictor: Any, path: str, out: str, *, input_shape: Sequence[int], batch_size: int = 1024,
                 members: bool = False) -> dict[str, Any]:
    """Predict every example of ``path`` and write ``out`` (``.csv`` or ``.npz``); returns
    ``{"examples", "classes", "members", "out"}`` (regression: ``classes`` 0, ``outputs`` D)."""
    ext = os.path.splitext(out)[1].lower()
    if ext not in (".csv", ".npz"):
        raise DataError(f"{out}: the output must be .csv or .npz, got {ext or 'no extension'}")
    tmp = f"{out}.tmp-{os.getpid()}"
    n, classes, m = 0, 0, 0
    parts: list[dict[str, np.ndarray]] = []
    try:
        with open(tmp, "w", newline="") if ext == ".csv" else contextlib.nullcontext() as fh:
            writer = csv.writer(fh) if ext == ".csv" else None
            for x in read_batches(path, input_shape, batch_size):
                pd = _predictive(predictor, torch.from_numpy(np.ascontiguousarray(x)))
                o = _outputs(pd, members)
                regression = isinstance(pd, Gaussian)
                m, classes = (pd.num_members, 0) if regression else (pd.shape[0], pd.shape[-1])  # type: ignore[union-attr]
                if writer is not None:
                    if n == 0:
                        writer.writerow(_regression_header(o) if regression else _header(classes, m if members else 0))
                    writer.writerows(_regression_rows(o) if regression else _rows(o, members))
                else:
                    parts.append(o)
                n += len(x)
        if ext == ".npz":
            arrays = {k: np.concatenate([p[k] for p in parts], axis=1 if k.startswith("member_") else 0) for k in parts[0]}
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    outputs = {"outputs": int(np.prod(o["mean"].shape[1:])) if o["mean"].ndim > 1 else 1} if n and "mean" in o else {}
    return {"examples": n, "classes": classes, "members": m, "out": out, **outputs}


def _header(classes: int, members: int) -> list[str]:
    cols = ["pred", *[f"p_{c}" for c in range(classes)], *_COLUMNS]
    return cols + [f"member{m}_p_{c}" for m in range(members) for c in range(classes)]


def _rows(o: dict[str, np.ndarray], members: bool) -> Iterator[list[Any]]:
    extra = o["member_probs"].transpose(1, 0, 2).reshape(o["pred"].shape[0], -1) if members else None
    for i in range(len(o["pred"])):
        row: list[Any] = [int(o["pred"][i]), *(f"{v:.6g}" for v in o["probs"][i]), *(f"{o[k][i]:.6g}" for k in _COLUMNS)]
        if extra is not None:
            row += [f"{v:.6g}" for v in extra[i]]
        yield row


def _columns(o: dict[str, np.ndarray]) -> list[tuple[str, np.ndarray]]:
    """Each regression array as ``(name, (N, K))``: one column per output (``_d``) and per member (``_m<m>``)."""
    cols = []
    for k, v in o.items():
        if k.startswith("member_"):  # (M, N[, D]) -> (N, M*D), member-major
            v = np.moveaxis(v, 0, 1)
            m = v.shape[1]
            flat = v.reshape(v.shape[0], m, -1)
            d = flat.shape[2]
            names = [f"member{i}_{k[7:]}" + (f"_{j}" if d > 1 else "") for i in range(m) for j in range(d)]
            cols.append((",".join(names), flat.reshape(len(flat), -1)))
        else:
            flat = v.reshape(len(v), -1)
            names = [k] if flat.shape[1] == 1 else [f"{k}_{j}" for j in range(flat.shape[1])]
            cols.append((",".join(names), flat))
    return cols


def _regression_header(o: dict[str, np.ndarray]) -> list[str]:
    return [name for names, _ in _columns(o) for name in names.split(",")]


def _regression_rows(o: dict[str, np.ndarray]) -> Iterator[list[str]]:
    table = np.concatenate([v for _, v in _columns(o)], axis=1)
    for row in table:
        yield [f"{v:.6g}" for v in row]
