"""``TrainConfig``: everything the training engine needs, validated before any training."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .optim import check_optimizer_spec
from .schedules import check_schedule_spec

__all__ = ["StrictModel", "TrainConfig"]


class StrictModel(BaseModel):
    """Pydantic model that refuses unknown keys (a typo is an error, not a silent default)."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, validate_assignment=True)


class TrainConfig(StrictModel):
    """How members are trained; the same for every method.

    Attributes:
        epochs: passes over the training split (>= 1; default 30).
        batch_size: examples per member per iteration (>= 1; default 100).
        optimizer: ``"adam"``, ``{name: sgd, lr: 0.05, momentum: 0.9, nesterov: true,
            weight_decay: 5e-4}`` (any ``torch.optim`` argument) or a callable
            ``params -> Optimizer``. Names: sgd, adam, adamw, adagrad, rmsprop.
        schedule: learning-rate policy: a name (constant, step, cosine, linear,
            inverse_sqrt, cosine_restarts, fge), a dict with its options
            (``{name: cosine, warmup: 1}``), or a callable ``step -> lr``.
        grad_clip: clip each member's gradient to this L2 norm (``null``: off).
        data_order: ``shared`` (all members see the same batches), ``per_member`` (each
            member its own shuffling) or ``bootstrap`` (bagging).
        eval_every: evaluate on the validation split every this many epochs.
        checkpoint_every: write a checkpoint every this many epochs (and at the end).
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:1``...
        progress: show a progress bar (``null``: only when stderr is a terminal).
    """

    epochs: int = Field(30, ge=1)
    batch_size: int = Field(100, ge=1)
    optimizer: Any = Field(default_factory=lambda: {"name": "adam", "lr": 1e-3})
    schedule: Any = "cosine"
    grad_clip: float | None = Field(None, gt=0)
    data_order: Literal["shared", "per_member", "bootstrap"] = "shared"
    eval_every: int = Field(1, ge=1)
    checkpoint_every: int = Field(1, ge=1)
    device: str = "auto"
    progress: bool | None = None

    @field_validator("optimizer")
    @classmethod
    def _optimizer(cls, v: Any) -> Any:
        check_optimizer_spec(v)
        return v

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, v: Any) -> Any:
        check_schedule_spec(v)
        return v

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v != "auto" and not (v == "cpu" or v.startswith("cuda") or v == "mps"):
            raise ValueError(f"device must be auto, cpu, cuda, cuda:N or mps, got {v!r}")
        return v
