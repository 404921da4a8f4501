"""The pieces a :class:`~ensemblekit.training.engine.Trainer` is built from, one function each.

Each piece checks its own part of the configuration and builds one thing: where the members
train (:func:`place_model`), the loss (:func:`stage_loss`), the callbacks that come with the
configuration (:func:`stage_callbacks`: early stopping, experiment trackers), the data order
(:func:`build_batcher`), the learning-rate policy (:func:`stage_schedule`), the optimizer over
the model's parameter layout with its loss scaling (:func:`build_optimization`), the forward
call (:func:`build_forward`) and the batch transforms (:func:`build_transforms`). The Trainer
calls them in this order, so a configuration with several faults is refused for the first.
Like the engine, the pieces know models only through
:mod:`ensemblekit.training.protocol`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch

from ..data.augment import Compose, build_augment, build_tta
from ..data.batching import Batch, LoaderBatcher, TensorBatcher
from ..data.dataset import Data
from ..errors import ConfigError
from .callbacks import Callback
from .checkpoint import RunDir
from .chunks import check_execution
from .config import TrainConfig
from .early_stopping import EarlyStopping
from .layout import ParamLayout, per_member_hparams
from .optim import build_optimizer, optimizer_lr
from .penalties import check_penalties
from .precision import MemberLossScaler, compiled_forward
from .protocol import TrainableModel, shared_tensor_names
from .schedules import Schedule, build_schedule

__all__ = ["LossFn", "resolve_device", "train_config", "place_model", "stage_loss", "stage_callbacks", "build_batcher", "StageSchedule",
           "stage_schedule", "Optimization", "build_optimization", "build_forward", "build_transforms"]

LossFn = Callable[[torch.Tensor, Batch], torch.Tensor]


def resolve_device(device: str) -> torch.device:
    """``auto`` -> the current CUDA device when there is one, else CPU; ``cuda`` -> ``cuda:<current>``."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} requested but CUDA is not available (use device: auto or cpu)")
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        elif dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device {device!r} requested but this machine has {torch.cuda.device_count()} CUDA device(s)")
    return dev


def train_config(config: TrainConfig | Mapping[str, Any]) -> TrainConfig:
    """``config`` as a :class:`TrainConfig` (a dict of its fields is validated)."""
    return config if isinstance(config, TrainConfig) else TrainConfig(**dict(config))


def place_model(model: TrainableModel, config: TrainConfig, stage: str) -> tuple[TrainableModel, torch.device]:
    """The model on its training device(s) and the device batches go to.

    With ``train.devices`` the members are sharded over them (the first is the batches');
    otherwise ``model`` itself when it is on ``train.device`` already, else a copy there.
    """
    if config.devices:
        check_execution(config, model, stage)
        devs = [resolve_device(d) for d in config.devices]
        return model.place(devs), devs[0]  # type: ignore[attr-defined]
    device = resolve_device(config.device)
    return (model if torch.device(model.device) == device else model.to(device)), device


def stage_loss(model: TrainableModel, stage: str, loss_fn: LossFn | None, loss_for: Callable[[TrainableModel], LossFn] | None,
               default: LossFn) -> LossFn:
    """The per-member loss ``(logits (M,B,C), batch) -> (M,)``: ``loss_fn``, or ``loss_for`` of
    the model being trained (the placed copy), or ``default``.

    Raises:
        ConfigError: both ``loss_fn`` and ``loss_for`` given.
    """
    if loss_fn is not None and loss_for is not None:
        raise ConfigError(f"{stage}: give loss_fn or loss_for, not both")
    return loss_for(model) if loss_for is not None else (loss_fn or default)


def stage_callbacks(config: TrainConfig, model: TrainableModel, run: RunDir | None, stage: str,
                    callbacks: Sequence[Callback]) -> list[Callback]:
    """The caller's callbacks, then those the configuration asks for: early stopping and the
    TensorBoard logger (with a run directory). Their order is their index in checkpoints.

    Raises:
        ConfigError: early stopping on a model whose members share tensors (no member's
            best weights can be restored alone).
    """
    out = list(callbacks)
    if config.early_stopping is not None:
        shared = shared_tensor_names(model)
        if shared:
            raise ConfigError(f"{stage}: early_stopping restores each member's own best weights, but {type(model).__name__} "
                              f"has tensors shared by its members ({shared[0]}, ...)")
        out.append(EarlyStopping(config.early_stopping))
    if "tensorboard" in config.loggers and run is not None:
        from .tracking import TensorBoardLogger

        out.append(TensorBoardLogger(run.path, stage))
    return out


def build_batcher(data: Data, config: TrainConfig, members: int, seed: int, device: torch.device) -> TensorBatcher | LoaderBatcher:
    """The data order: index-sliced batches of an in-memory training split (``train.data_order``
    over ``members``, shuffled from ``seed``), or the user's DataLoader as it is."""
    if data.train.in_memory:
        return TensorBatcher(data.train.x, data.train.y, batch_size=config.batch_size, members=members,
                             order=config.data_order, seed=seed, device=device)
    return LoaderBatcher(data.train.loader, device=device)  # type: ignore[arg-type]


@dataclass(frozen=True)
class StageSchedule:
    """The stage's policy ``step -> lr``, the optimizer's base rate it is relative to, and the
    stage's length in iterations."""

    policy: Schedule
    base_lr: float
    total_steps: int


def stage_schedule(config: TrainConfig, steps_per_epoch: int, schedule: Schedule | None) -> StageSchedule:
    """``schedule`` when given, else ``train.schedule`` over the run's steps (``train.steps``, or ``train.epochs``)."""
    base_lr, total = optimizer_lr(config.optimizer), config.total_steps(steps_per_epoch)
    policy = schedule or build_schedule(config.schedule, lr=base_lr, total_steps=total, steps_per_epoch=steps_per_epoch)
    return StageSchedule(policy, base_lr, total)


@dataclass
class Optimization:
    """The parameter layout (per-member settings over the model's parameter groups), the
    optimizer over it, and with ``precision: fp16`` the per-member loss scaler with the
    tensors it unscales (listed once: they are fixed for the stage)."""

    layout: ParamLayout
    optimizer: torch.optim.Optimizer
    scaler: MemberLossScaler | None
    stepped: list[tuple[torch.Tensor, slice | int | None]]


def build_optimization(model: TrainableModel, config: TrainConfig, stage: str) -> Optimization:
    """Check the penalties against the model, then build the layout, optimizer and loss scaler.

    Raises:
        ConfigError: penalties the model cannot take, or per-member optimizer settings of the
            wrong length or on tensors its members share.
    """
    if config.penalties.active:
        check_penalties(model, stage)
    m = model.num_members
    layout = ParamLayout(model, per_member_hparams(config.optimizer, m))
    optimizer = build_optimizer(config.optimizer, layout.optimizer_params())
    scaler = MemberLossScaler(m) if config.precision == "fp16" else None
    return Optimization(layout, optimizer, scaler, layout.stepped() if scaler is not None else [])


def build_forward(model: TrainableModel, config: TrainConfig, stage: str) -> Callable[..., torch.Tensor]:
    """The training forward call: the model, or its ``torch.compile``d forward with ``train.compile``."""
    return compiled_forward(model, stage) if config.compile else model


def build_transforms(config: TrainConfig, input_shape: Sequence[int]) -> tuple[Compose | None, list[Compose] | None]:
    """``(augment, tta)``: the training batch transforms and the test-time ones (``None``: off)."""
    augment = build_augment(config.augment, input_shape)
    tta = build_tta(config.tta, input_shape) if config.tta else None
    return augment, tta
