"""The training engine: one Trainer for everything that follows the trainable-model protocol.

Owns: :class:`Trainer` (:mod:`.engine`, assembled from the pieces in :mod:`.wiring`), the
protocol (:mod:`.protocol`), :class:`TrainConfig` (:mod:`.config`), optimizers and
per-member clipping (:mod:`.optim`), learning-rate policies (:mod:`.schedules`, a registry),
penalties, losses, parameter layouts, precision and loss scaling, member chunks, FLOP
counting, checkpoints and run directories (:mod:`.checkpoint`), callbacks, early stopping,
the pre-run probe and the TensorBoard logger.

May import: the base modules, ``data``, ``metrics`` and ``evaluation`` (validation runs the
one prediction pass); never a model class (``tests/test_architecture.py``).
"""

from . import schedules
from .callbacks import Callback
from .checkpoint import RunDir
from .config import TrainConfig
from .engine import Trainer
from .tasks import cross_entropy_per_member, task_loss
from .optim import build_optimizer, clip_grad_norm_per_member
from .protocol import ParamGroup, TrainableModel, check_trainable

__all__ = ["schedules", "Callback", "RunDir", "TrainConfig", "Trainer", "cross_entropy_per_member", "task_loss", "build_optimizer", "clip_grad_norm_per_member",
           "ParamGroup", "TrainableModel", "check_trainable"]
