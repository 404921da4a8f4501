"""Building the pieces of a training run on a probe, so that a bad config fails before anything is written.

torch checks an optimizer's arguments only when it is built (a negative momentum, betas
outside [0, 1), a weight decay given as a string), and a schedule's option values only when
it is evaluated; a transform meets the data's shape only when it is built. Waiting for the
first training step would leave a half-made run directory behind. :func:`probe_training`
builds each of them up front, on a one-element parameter, and turns what they raise into
one :class:`~ensemblekit.errors.ConfigError` naming the field.
"""

from __future__ import annotations

import torch

from ..data.augment import build_augment, build_tta
from ..data.dataset import Data
from ..errors import ConfigError, EnsembleKitError
from .config import TrainConfig
from .optim import build_optimizer, optimizer_lr
from .schedules import build_schedule

__all__ = ["probe_training"]


def probe_training(cfg: TrainConfig, data: Data, steps_per_epoch: int) -> None:
    """Build the optimizer, the learning-rate policy and the transforms of ``cfg`` for ``data``.

    Also checks what the run needs from the machine and the data: the device exists and
    early stopping has a validation split.

    Raises:
        ConfigError: an argument torch or the policy rejects (``train.optimizer: ...``,
            ``train.schedule: ...``), a device this machine does not have, early stopping
            without a validation split. DataError: a transform that does not fit the examples.
    """
    from .engine import resolve_device

    resolve_device(cfg.device)
    if cfg.early_stopping is not None and data.val is None:
        raise ConfigError("train.early_stopping needs a validation split (data val_fraction > 0 or x_val/y_val)")
    probe = torch.zeros(2, requires_grad=True)
    spec = cfg.optimizer
    if not callable(spec):
        try:
            build_optimizer(spec, [probe])
        except EnsembleKitError:
            raise
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"train.optimizer {spec!r}: {exc}") from None
    total = cfg.total_steps(steps_per_epoch)
    try:
        policy = build_schedule(cfg.schedule, lr=optimizer_lr(spec), total_steps=total, steps_per_epoch=steps_per_epoch)
        rates = [float(policy(step)) for step in sorted({0, total // 2, total - 1})]
    except EnsembleKitError as exc:
        raise ConfigError(f"train.schedule: {exc}") from None
    except (TypeError, ValueError, ZeroDivisionError, OverflowError) as exc:
        raise ConfigError(f"train.schedule {cfg.schedule!r}: {type(exc).__name__}: {exc}") from None
    if any(not (r >= 0) for r in rates):  # also catches NaN
        raise ConfigError(f"train.schedule {cfg.schedule!r} gives the learning rates {rates} at steps 0, middle and end; they must be >= 0")
    build_augment(cfg.augment, data.input_shape)
    if cfg.tta:
        build_tta(cfg.tta, data.input_shape)
