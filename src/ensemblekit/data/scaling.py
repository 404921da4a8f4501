"""Standardisation fitted on the training split: inputs per feature, regression targets per output.

Deep ensembles for regression (Lakshminarayanan, Pritzel and Blundell, "Simple and
Scalable Predictive Uncertainty Estimation using Deep Ensembles", NeurIPS 2017) follow the
UCI protocol of Hernández-Lobato and Adams (ICML 2015): inputs and targets are scaled to
zero mean and unit variance with statistics of the training data only, the network
predicts a Gaussian in those units, and RMSE and NLL are reported in the original units
(:meth:`Standardizer.inverse_gaussian`). The state is JSON-able so that it can be saved
beside an ensemble.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import ConfigError, DataError
from .dataset import Data, Split, validate_data

__all__ = ["Standardizer", "standardize", "STATE_FORMAT"]

#: The ``format`` tag of :meth:`Standardizer.state`.
STATE_FORMAT = "ensemblekit.standardizer/1"


def _stats(t: torch.Tensor, min_std: float) -> tuple[torch.Tensor, torch.Tensor]:
    t = t.double()
    mean, std = t.mean(0), t.std(0, unbiased=False)
    # A (near-)constant column is centred, not divided by ~0 (as scikit-learn's StandardScaler does).
    std = torch.where(std < min_std, torch.ones_like(std), std)
    return mean, std


@dataclass(frozen=True)
class Standardizer:
    """Affine maps ``z = (v - mean) / std`` of inputs and (for regression) targets.

    Statistics are per feature (over the example axis, one value per input element) and per
    target output; ``std`` is the population standard deviation (``ddof=0``), and a
    standard deviation below ``min_std`` is replaced by 1 so that a constant feature stays
    finite. Arithmetic is done in float64 and returned as float32.

    Attributes:
        x_mean, x_std: ``input_shape`` tensors (float64).
        y_mean, y_std: ``target_shape`` tensors for regression targets, ``None`` when the
            targets are not scaled (classification labels).
        min_std: the floor (default 1e-8).

    Example:
        >>> s = Standardizer.fit(torch.tensor([[0.0], [2.0]]), torch.tensor([1.0, 3.0]))
        >>> s.transform_y(torch.tensor([3.0])), s.inverse_gaussian(torch.tensor(0.0), torch.tensor(1.0))
        (tensor([1.]), (tensor(2.), tensor(1.)))
    """

    x_mean: torch.Tensor
    x_std: torch.Tensor
    y_mean: torch.Tensor | None = None
    y_std: torch.Tensor | None = None
    min_std: float = 1e-8

    @classmethod
    def fit(cls, x: torch.Tensor, y: torch.Tensor | None = None, *, min_std: float = 1e-8) -> "Standardizer":
        """Fit on training inputs ``x`` ``(N, *input_shape)`` and, optionally, float targets ``y`` ``(N,)`` or ``(N, D)``.

        Raises:
            ConfigError: ``min_std`` not a positive number.
            DataError: fewer than 2 examples, non-float targets, or non-finite values.
        """
        if not float(min_std) > 0:
            raise ConfigError(f"min_std must be > 0, got {min_std!r}")
        if x.dim() < 2 or x.shape[0] < 2:
            raise DataError(f"standardising needs at least 2 training examples of shape (N, *input_shape), got x of shape {tuple(x.shape)}")
        if not torch.isfinite(x).all():
            raise DataError("standardising: the training inputs have NaN or infinite values")
        x_mean, x_std = _stats(x, float(min_std))
        y_mean = y_std = None
        if y is not None:
            if not y.is_floating_point() or y.dim() not in (1, 2) or y.shape[0] != x.shape[0]:
                raise DataError(f"standardising: targets must be float (N,) or (N, D) with N = {x.shape[0]}, got {y.dtype} {tuple(y.shape)}")
            if not torch.isfinite(y).all():
                raise DataError("standardising: the training targets have NaN or infinite values")
            y_mean, y_std = _stats(y, float(min_std))
        return cls(x_mean, x_std, y_mean, y_std, float(min_std))

    @property
    def scales_targets(self) -> bool:
        return self.y_mean is not None

    def _need_targets(self) -> None:
        if self.y_mean is None:
            raise DataError("this Standardizer was fitted without targets (classification data): it does not scale targets")

    def transform_x(self, x: torch.Tensor) -> torch.Tensor:
        """Inputs ``(N, *input_shape)`` in standard units."""
        return ((x.double() - self.x_mean) / self.x_std).to(torch.float32)

    def inverse_x(self, z: torch.Tensor) -> torch.Tensor:
        """Inputs back in original units."""
        return (z.double() * self.x_std + self.x_mean).to(torch.float32)

    def transform_y(self, y: torch.Tensor) -> torch.Tensor:
        """Targets ``(..., *target_shape)`` in standard units."""
        self._need_targets()
        return ((y.double() - self.y_mean) / self.y_std).to(torch.float32)

    def inverse_y(self, z: torch.Tensor) -> torch.Tensor:
        """Targets (or predicted means) ``(..., *target_shape)`` back in original units."""
        self._need_targets()
        return (z.double() * self.y_std + self.y_mean).to(torch.float32)

    def inverse_gaussian(self, mean: torch.Tensor, var: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A predictive Gaussian in standard units mapped back: ``(mean * s + m, var * s^2)``.

        Args:
            mean, var: ``(..., *target_shape)``, e.g. per-member ``(M, B)`` or ``(M, B, D)``.

        Returns:
            ``(mean, var)`` in original units, same shapes, float32.
        """
        self._need_targets()
        if mean.shape != var.shape:
            raise DataError(f"mean and var must have the same shape, got {tuple(mean.shape)} and {tuple(var.shape)}")
        return self.inverse_y(mean), (var.double() * self.y_std**2).to(torch.float32)

    def state(self) -> dict[str, Any]:
        """A JSON-able dict (nested lists of floats) that :meth:`from_state` reads back exactly."""
        def plain(t: torch.Tensor | None) -> Any:
            return None if t is None else t.tolist()

        return {"format": STATE_FORMAT, "input_shape": list(self.x_mean.shape), "x_mean": plain(self.x_mean), "x_std": plain(self.x_std),
                "target_shape": None if self.y_mean is None else list(self.y_mean.shape),
                "y_mean": plain(self.y_mean), "y_std": plain(self.y_std), "min_std": self.min_std}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "Standardizer":
        """Rebuild from :meth:`state`.

        Raises:
            DataError: not a standardiser state, or inconsistent shapes / non-positive scales.
        """
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            got = state.get("format") if isinstance(state, dict) else type(state).__name__
            raise DataError(f"not a standardiser state (format {STATE_FORMAT!r} expected, got {got!r})")
        try:
            def tensor(key: str, shape: Any) -> torch.Tensor | None:
                if state.get(key) is None:
                    return None
                t = torch.tensor(state[key], dtype=torch.float64)
                if list(t.shape) != list(shape):
                    raise DataError(f"standardiser state: {key} has shape {list(t.shape)}, expected {list(shape)}")
                return t

            x_mean, x_std = tensor("x_mean", state["input_shape"]), tensor("x_std", state["input_shape"])
            tshape = state.get("target_shape")
            y_mean = tensor("y_mean", tshape) if tshape is not None else None
            y_std = tensor("y_std", tshape) if tshape is not None else None
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, DataError):
                raise
            raise DataError(f"standardiser state is malformed: {type(exc).__name__}: {exc}") from None
        if x_mean is None or x_std is None or (y_mean is None) != (y_std is None):
            raise DataError("standardiser state: x_mean and x_std are required, and y_mean and y_std go together")
        for t in (x_std, y_std):
            if t is not None and not bool((t > 0).all() and torch.isfinite(t).all()):
                raise DataError("standardiser state: every std must be a finite number > 0")
        return cls(x_mean, x_std, y_mean, y_std, float(state.get("min_std", 1e-8)))


def _scaled(split: Split | None, s: Standardizer) -> Split | None:
    if split is None:
        return None
    return Split(s.transform_x(split.x), s.transform_y(split.y) if s.scales_targets else split.y)  # type: ignore[arg-type]


def standardize(data: Data, *, targets: bool | None = None, min_std: float = 1e-8) -> tuple[Data, Standardizer]:
    """``data`` with every split scaled by a :class:`Standardizer` fitted on the training split only.

    Args:
        data: in-memory data (DataLoader splits cannot be rescaled here).
        targets: scale the targets too (default: for regression data only; classification
            labels are never scaled).
        min_std: floor below which a feature's std is taken as 1 (default 1e-8).

    Returns:
        ``(scaled data, standardiser)``: the scaled data keeps name, seeds and task, has
        ``info["standardized"] = True`` and a new digest (its tensors changed).

    Raises:
        DataError: a split is a DataLoader, or target scaling is asked for classification data.

    Example:
        >>> scaled, s = standardize(load_dataset("diabetes"))
        >>> test_y = s.inverse_y(scaled.test.y)  # the test targets in their original units again
    """
    if targets is None:
        targets = data.task == "regression"
    if targets and data.task != "regression":
        raise DataError(f"only regression targets can be standardised; {data.name!r} is {data.task} data")
    for name in ("train", "val", "test", "held_out"):
        split = getattr(data, name)
        if split is not None and not split.in_memory:
            raise DataError(f"standardize needs in-memory splits; the {name} split of {data.name!r} is a DataLoader")
    s = Standardizer.fit(data.train.x, data.train.y if targets else None, min_std=min_std)  # type: ignore[arg-type]
    held_out = None
    if data.held_out is not None:  # OOD examples: their inputs are scaled like any test input; labels are kept
        held_out = Split(s.transform_x(data.held_out.x), data.held_out.y)  # type: ignore[arg-type]
    scaled = dataclasses.replace(
        data, train=_scaled(data.train, s), val=_scaled(data.val, s), test=_scaled(data.test, s), held_out=held_out,
        info={**data.info, "standardized": True},
    )
    return validate_data(scaled), s
