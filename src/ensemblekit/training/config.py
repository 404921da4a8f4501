"""``TrainConfig``: everything the training engine needs, validated before any training."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from ..schema import StrictModel
from .optim import check_optimizer_spec
from .schedules import check_schedule_spec

__all__ = ["TrainConfig", "PenaltyConfig", "EarlyStoppingConfig"]


class PenaltyConfig(StrictModel):
    """Penalties added to each member's loss (per member, on that member's own weights).

    Attributes:
        l2: ``(l2 / 2) * sum w^2`` (an L2 *penalty*: its gradient goes through the
            optimizer, so Adam rescales it; compare ``TrainConfig.weight_decay``).
        l1: ``l1 * sum |w|``.
        elastic_net: ``strength * (l1_ratio * sum |w| + (1 - l1_ratio) / 2 * sum w^2)``.
        weight_elimination: ``strength * sum (w^2 / w0^2) / (1 + w^2 / w0^2)``.
        apply_to: ``all`` parameters or only ``weights`` (tensors with >= 2 dimensions:
            biases and normalisation parameters are left alone).
    """

    l2: float = Field(0.0, ge=0)
    l1: float = Field(0.0, ge=0)
    elastic_net: dict[str, float] | None = None
    weight_elimination: dict[str, float] | None = None
    apply_to: Literal["all", "weights"] = "all"

    @field_validator("elastic_net")
    @classmethod
    def _en(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        if v is None:
            return v
        if set(v) - {"strength", "l1_ratio"} or "strength" not in v:
            raise ValueError(f"elastic_net takes strength (>= 0) and l1_ratio (in [0, 1]), got {v}")
        if v["strength"] < 0 or not 0 <= v.get("l1_ratio", 0.5) <= 1:
            raise ValueError(f"elastic_net needs strength >= 0 and l1_ratio in [0, 1], got {v}")
        return {"strength": float(v["strength"]), "l1_ratio": float(v.get("l1_ratio", 0.5))}

    @field_validator("weight_elimination")
    @classmethod
    def _we(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        if v is None:
            return v
        if set(v) - {"strength", "w0"} or "strength" not in v:
            raise ValueError(f"weight_elimination takes strength (>= 0) and w0 (> 0), got {v}")
        if v["strength"] < 0 or v.get("w0", 1.0) <= 0:
            raise ValueError(f"weight_elimination needs strength >= 0 and w0 > 0, got {v}")
        return {"strength": float(v["strength"]), "w0": float(v.get("w0", 1.0))}

    @property
    def active(self) -> bool:
        return bool(self.l2 or self.l1 or (self.elastic_net and self.elastic_net["strength"]) or (self.weight_elimination and self.weight_elimination["strength"]))


class EarlyStoppingConfig(StrictModel):
    """Stop when no member's validation metric improved for ``patience`` evaluations; restore each member's best weights."""

    patience: int = Field(5, ge=1)
    metric: Literal["val_nll", "val_acc", "val_rmse"] = "val_nll"
    min_delta: float = Field(0.0, ge=0)


class TrainConfig(StrictModel):
    """How members are trained; the same for every method.

    Attributes:
        epochs: passes over the training split (>= 1; default 30).
        steps: optimisation steps of the run, when they are not whole epochs (default: epochs x
            steps per epoch): the last pass over the training split is cut short and the
            learning-rate policy spans exactly these steps. ``compare`` with ``budget_unit:
            flops`` sets it to fit a method into its budget (docs/comparisons.md).
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
        weight_decay: decoupled weight decay ``w <- w - lr * weight_decay * w`` after each
            step, for any optimizer (AdamW-style; distinct from ``penalties.l2``).
        penalties: L2, L1, elastic net, weight elimination (:class:`PenaltyConfig`).
        augment: batch transforms applied to training inputs, e.g. ``[hflip, {name: crop,
            padding: 4}, {name: cutout, size: 8}]`` or for signals ``[{name: shift, max_shift: 4}]``.
        mixup: mixup's Beta(alpha, alpha) parameter (0: off); metrics stay on hard labels.
        tta: deterministic test-time transforms whose predictions are averaged at
            evaluation (e.g. ``[identity, hflip]``).
        early_stopping: patience on a validation metric (:class:`EarlyStoppingConfig`).
        precision: arithmetic of the training forward pass and loss: ``fp32`` (default),
            ``bf16`` (autocast; CPU and CUDA) or ``fp16`` (autocast with loss scaling that
            skips only the members whose gradient overflowed); master weights, BatchNorm
            statistics, checkpoints and evaluation stay fp32
            (:mod:`ensemblekit.training.precision`).
        member_chunk: run the member axis of each training step in chunks of this many
            members (gradients accumulate per member: the same numbers as one pass, less
            memory); ``auto`` measures one member's step and takes the largest chunk that
            fits in the device's free memory; ``null`` (default): all members at once.
            Needs an :class:`~ensemblekit.ensemble.Ensemble` and a per-member loss.
        compile: compile the model's training forward pass with ``torch.compile``
            (falls back to eager, with a warning, where compilation fails).
        devices: train the members on several devices, e.g. ``[cuda:0, cuda:1]``: the
            member axis is cut into one contiguous shard per device (no gradient
            all-reduce: members are independent); ``device`` is then ignored. Needs an
            :class:`~ensemblekit.ensemble.Ensemble` (:mod:`ensemblekit.ensemble.placement`).
        loggers: experiment trackers, ``[tensorboard]``: per-epoch scalars per member and
            for the ensemble, the size curve, the reliability diagram and the run's
            hyperparameters under ``RUN_DIR/tensorboard`` (:mod:`ensemblekit.training.tracking`).
        loss: each member's training loss: ``auto`` (cross-entropy for classification, the
            Gaussian NLL of a mean-variance head for regression), ``cross_entropy``, or for
            regression ``nll``, ``beta_nll`` (Seitzer et al., ICLR 2022) or ``mse`` (a
            means-only head: the members' spread is then the only epistemic uncertainty, and
            each member's noise variance is its mean squared training residual).
            :mod:`ensemblekit.training.tasks`.
        beta: beta-NLL's exponent in [0, 1] (default 0.5; 0 is the NLL, 1 weighs like MSE).
        standardize: regression only: scale inputs and targets by the training split's mean
            and std before training (default true); the statistics are saved with the
            ensemble and every prediction, metric and export is in the original units.
    """

    epochs: int = Field(30, ge=1)
    steps: int | None = Field(None, ge=1)
    batch_size: int = Field(100, ge=1)
    optimizer: Any = Field(default_factory=lambda: {"name": "adam", "lr": 1e-3})
    schedule: Any = "cosine"
    grad_clip: float | None = Field(None, gt=0)
    data_order: Literal["shared", "per_member", "bootstrap"] = "shared"
    eval_every: int = Field(1, ge=1)
    checkpoint_every: int = Field(1, ge=1)
    device: str = "auto"
    progress: bool | None = None
    weight_decay: float = Field(0.0, ge=0)
    penalties: PenaltyConfig = Field(default_factory=PenaltyConfig)
    augment: list[Any] = Field(default_factory=list)
    mixup: float = Field(0.0, ge=0)
    tta: list[Any] = Field(default_factory=list)
    early_stopping: EarlyStoppingConfig | None = None
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    member_chunk: int | Literal["auto"] | None = None
    compile: bool = False
    devices: list[str] | None = None
    loggers: list[str] = Field(default_factory=list)
    loss: Literal["auto", "cross_entropy", "nll", "beta_nll", "mse"] = "auto"
    beta: float = Field(0.5, ge=0, le=1)
    standardize: bool = True

    def total_steps(self, steps_per_epoch: int) -> int:
        """The run's optimisation steps: ``steps`` when set, else ``epochs x steps_per_epoch``."""
        return int(self.steps) if self.steps is not None else self.epochs * int(steps_per_epoch)

    def passes(self, steps_per_epoch: int) -> int:
        """The passes over the training split the run makes (the last one possibly cut short)."""
        return -(-self.total_steps(steps_per_epoch) // int(steps_per_epoch))

    @field_validator("loggers")
    @classmethod
    def _loggers(cls, v: list[str]) -> list[str]:
        from .tracking import check_loggers

        return check_loggers(v)

    @field_validator("member_chunk")
    @classmethod
    def _member_chunk(cls, v: Any) -> Any:
        if isinstance(v, bool) or (isinstance(v, int) and v < 1):
            raise ValueError(f"member_chunk must be an int >= 1, 'auto' or null, got {v!r}")
        return v

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

    @field_validator("augment")
    @classmethod
    def _augment(cls, v: list[Any]) -> list[Any]:
        from ..data.augment import check_augment_spec

        check_augment_spec(v)
        return v

    @field_validator("tta")
    @classmethod
    def _tta(cls, v: list[Any]) -> list[Any]:
        from ..data.augment import check_tta_spec

        check_tta_spec(v)
        return v

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v != "auto" and not (v == "cpu" or v.startswith("cuda") or v == "mps"):
            raise ValueError(f"device must be auto, cpu, cuda, cuda:N or mps, got {v!r}")
        return v

    @field_validator("devices")
    @classmethod
    def _devices(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("devices must list at least one device (or be null)")
        for d in v:
            if not (d == "cpu" or d.startswith("cuda")):
                raise ValueError(f"devices entries must be cpu, cuda or cuda:N, got {d!r}")
        return v
