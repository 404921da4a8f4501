"""A searched value's schema: ``{type: float, low: 1e-4, high: 0.3, log: true}``, an int range or
a list of choices (``ensemblekit tune``'s ``search.params`` and ``compare``'s ``tuning.space``).

Optuna is imported only by the search itself (:mod:`ensemblekit.experiments.tune`), so reading
a config that names a search space does not load it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import model_validator

from .base import StrictModel

if TYPE_CHECKING:
    import optuna

__all__ = ["SCALARS", "ParamSpec", "encode_choice"]

SCALARS = (type(None), bool, int, float, str)


class ParamSpec(StrictModel):
    """One searched value: ``{type: float, low: 1e-4, high: 0.3, log: true}``,
    ``{type: int, low: 16, high: 64, step: 16}`` or ``{type: categorical, choices: [50, 100]}``.

    ``grid`` lists the values of a float/int range for the grid sampler (ints may give
    ``step`` instead). Categorical choices may be lists or mappings (``[[32], [64, 64]]``).
    """

    type: Literal["float", "int", "categorical"]
    low: int | float | None = None
    high: int | float | None = None
    log: bool = False
    step: int | float | None = None
    choices: list[Any] | None = None
    grid: list[int | float] | None = None

    @model_validator(mode="after")
    def _check(self) -> "ParamSpec":
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical parameter needs a non-empty list `choices`")
            extra = [k for k in ("low", "high", "step", "grid") if getattr(self, k) is not None] + (["log"] if self.log else [])
            if extra:
                raise ValueError(f"a categorical parameter takes only `choices`, got also {extra}")
            keys = [encode_choice(c) for c in self.choices]
            if len(set(keys)) != len(keys):
                raise ValueError(f"categorical choices must be distinct, got {self.choices}")
            return self
        if self.choices is not None:
            raise ValueError(f"a {self.type} range takes low and high, not choices; use type: categorical for a list of values")
        if self.low is None or self.high is None:
            raise ValueError(f"a {self.type} parameter needs low and high, got low={self.low}, high={self.high}")
        if not self.low < self.high:
            raise ValueError(f"low must be < high, got low={self.low}, high={self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"log: true needs low > 0, got low={self.low}")
        if self.step is not None and (self.log or self.step <= 0):
            raise ValueError(f"step must be > 0 and cannot be combined with log: true, got step={self.step}, log={self.log}")
        if self.type == "int":
            for key in ("low", "high", "step"):
                v = getattr(self, key)
                if v is not None and not float(v).is_integer():
                    raise ValueError(f"an int parameter needs an integer {key}, got {v}")
        if self.grid is not None:
            if not self.grid:
                raise ValueError("grid must list at least one value")
            bad = [v for v in self.grid if not self.low <= v <= self.high or (self.type == "int" and not float(v).is_integer())]
            if bad:
                kind = "integers " if self.type == "int" else ""
                raise ValueError(f"grid values must be {kind}in [low, high] = [{self.low}, {self.high}], got {bad}")
        return self

    def grid_values(self) -> list[Any] | None:
        """The values the grid sampler visits (encoded choices), or ``None`` when the range has none."""
        if self.type == "categorical":
            return [encode_choice(c) for c in self.choices or []]
        if self.grid is not None:
            return list(dict.fromkeys(int(v) if self.type == "int" else float(v) for v in self.grid))
        if self.type == "int" and self.step is not None:
            return list(range(int(self.low), int(self.high) + 1, int(self.step)))  # type: ignore[arg-type]
        return None

    def suggest(self, trial: optuna.Trial, name: str) -> Any:
        """Sample this parameter in ``trial``; returns the value to put in the config."""
        if self.type == "categorical":
            keys = [encode_choice(c) for c in self.choices or []]
            return dict(zip(keys, self.choices or []))[trial.suggest_categorical(name, keys)]
        if self.type == "int":
            return trial.suggest_int(name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)  # type: ignore[arg-type]
        return trial.suggest_float(name, float(self.low), float(self.high), step=self.step, log=self.log)  # type: ignore[arg-type]

    def encode_if_valid(self, value: Any) -> tuple[bool, Any]:
        """``(True, stored value)`` when ``value`` lies in this space, else ``(False, None)``."""
        if self.type == "categorical":
            keys = [encode_choice(c) for c in self.choices or []]
            key = encode_choice(value)
            return (key in keys, key if key in keys else None)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return False, None
        ok = self.low <= value <= self.high and (self.type == "float" or float(value).is_integer())  # type: ignore[operator]
        return ok, (int(value) if self.type == "int" else float(value)) if ok else None

    def decode(self, value: Any) -> Any:
        """An optuna-stored value back to the config value (categorical choices are stored as keys)."""
        if self.type == "categorical":
            return dict(zip((encode_choice(c) for c in self.choices or []), self.choices or [])).get(value, value)
        return value

    def candidates(self) -> list[Any]:
        """Values that probe the config paths up front: both ends of a range, every choice."""
        if self.type == "categorical":
            return list(self.choices or [])
        return list(dict.fromkeys([self.low, self.high, *(self.grid or [])]))


def encode_choice(choice: Any) -> Any:
    """Optuna stores scalars only: a list/mapping choice is keyed by its one-line YAML."""
    if isinstance(choice, SCALARS):
        return choice
    return yaml.safe_dump(choice, default_flow_style=True, sort_keys=True).strip()
