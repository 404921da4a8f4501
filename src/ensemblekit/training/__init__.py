"""Training engine, optimizers, learning-rate policies, checkpoints and callbacks."""

from . import schedules
from .callbacks import Callback
from .checkpoint import RunDir
from .config import TrainConfig
from .engine import Trainer, cross_entropy_per_member
from .optim import build_optimizer, clip_grad_norm_per_member
from .protocol import ParamGroup, TrainableModel, check_trainable

__all__ = ["schedules", "Callback", "RunDir", "TrainConfig", "Trainer", "cross_entropy_per_member", "build_optimizer", "clip_grad_norm_per_member",
           "ParamGroup", "TrainableModel", "check_trainable"]
