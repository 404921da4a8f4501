"""What the engine does differently per task: the default loss, the training statistic, validation.

The engine trains classification and regression members the same way (stacked members, one
vectorised step, the same optimizer, checkpoints and resume); three things depend on the
data's task (:attr:`ensemblekit.data.Data.task`), and they live here:

- the **loss** (``train.loss``): cross-entropy for classification; for regression the Gaussian
  NLL of a mean-variance head (default), beta-NLL or MSE of a means-only head
  (:mod:`ensemblekit.training.regression_losses`);
- the **training statistic** logged each epoch: accuracy (``train_acc``), or the RMSE of the
  members' means (``train_rmse``, in the units the model is trained in);
- the **validation metrics** (:func:`validation_logs`, one prediction pass through
  :func:`~ensemblekit.evaluation.forward.predictive`): ``val_acc``/``val_nll`` of the ensemble
  and each member's accuracy and NLL for classification; for regression ``val_nll`` (the
  mixture NLL), ``val_rmse``, ``val_crps`` and each member's NLL and RMSE. Regression
  members are validated in the standardised units they train in (the model being trained
  has no scaling yet: :class:`~ensemblekit.metrics.head_outputs.Readout`), so ``val_nll``
  differs from the reported test NLL by the constant ``sum(log std_y)``.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F

from ..data.batching import Batch
from ..data.dataset import Data
from ..errors import ConfigError, NonFiniteLossError
from ..evaluation.forward import Transform, predictive
from ..metrics.classification import accuracy, nll
from ..metrics.head_outputs import Readout
from ..metrics.predictive import Categorical, Gaussian
from ..metrics.regression import crps_mixture, gaussian_nll, mixture_nll, rmse
from .config import TrainConfig
from .regression_losses import REGRESSION_LOSSES, regression_loss

__all__ = ["cross_entropy_per_member", "check_task", "task_loss", "head_width", "step_statistic", "statistic_logs", "validation_logs"]


def cross_entropy_per_member(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Mean cross-entropy of each member: logits ``(M, B, C)`` -> ``(M,)``."""
    m, b, c = logits.shape
    y = batch.y.reshape(-1) if batch.per_member else batch.y.repeat(m)
    return F.cross_entropy(logits.reshape(m * b, c), y, reduction="none").reshape(m, b).mean(1)


cross_entropy_per_member.member_wise = True  # type: ignore[attr-defined]  # member m's loss reads only its logits


def task_loss(config: TrainConfig, data: Data) -> Any:
    """The per-member loss ``train.loss`` names for this data's task (``auto``: cross-entropy or Gaussian NLL).

    Raises:
        ConfigError: a classification loss on regression data, or a regression loss on class labels.
    """
    name = config.loss
    if data.task == "regression":
        if name == "cross_entropy":
            raise ConfigError(f"train.loss: cross_entropy is a classification loss, and {data.name!r} is regression data "
                              f"(float targets); use one of auto, {', '.join(REGRESSION_LOSSES)}")
        return regression_loss("nll" if name == "auto" else name, beta=config.beta)
    if name not in ("auto", "cross_entropy"):
        raise ConfigError(f"train.loss: {name} is a regression loss, and {data.name!r} is classification data "
                          "(class labels); use auto or cross_entropy")
    return cross_entropy_per_member


def check_task(config: TrainConfig, data: Data) -> None:
    """Training options that do not fit the data's task, refused in one line before anything runs.

    Raises:
        ConfigError: a loss of the other task, ``early_stopping.metric: val_acc`` on regression
            data (or ``val_rmse`` on class labels), mixup on regression targets, standardising
            regression data whose splits are DataLoaders.
    """
    task_loss(config, data)
    es = config.early_stopping
    if data.task == "regression":
        if es is not None and es.metric == "val_acc":
            raise ConfigError("train.early_stopping.metric: val_acc is a classification metric; for regression use val_nll or val_rmse")
        if config.mixup > 0:
            raise ConfigError("train.mixup mixes class labels; it is not defined for regression targets (set mixup: 0)")
        if config.standardize and not all(s is None or s.in_memory for s in (data.train, data.val, data.test)):
            raise ConfigError("train.standardize needs in-memory splits (the data has DataLoader splits); "
                              "standardise them yourself and set train.standardize: false")
    elif es is not None and es.metric == "val_rmse":
        raise ConfigError("train.early_stopping.metric: val_rmse is a regression metric; for classification use val_nll or val_acc")


def head_width(config: TrainConfig, data: Data) -> int:
    """The width of the final layer a member must have: C classes, 2*D for a mean-variance
    regression head, D for a means-only head (``loss: mse``)."""
    if data.task != "regression":
        return int(data.num_classes)
    return int(data.num_outputs) * (1 if config.loss == "mse" else 2)


def step_statistic(outputs: torch.Tensor, batch: Batch, readout: Readout) -> torch.Tensor:
    """Per member ``(M,)``: correct predictions in the batch (classification), or the summed
    squared error of the means over the batch, averaged over the D outputs (regression: a head's
    first D outputs are its means, :mod:`ensemblekit.metrics.head_outputs`)."""
    y = batch.y if batch.per_member else batch.y.unsqueeze(0)
    if not readout.is_regression:
        return (outputs.argmax(-1) == y).sum(-1)
    means = outputs.detach()[..., : readout.num_outputs].float()  # (M, B, D)
    if y.dim() == means.dim() - 1:
        y = y.unsqueeze(-1)
    return (means - y).square().mean(-1).sum(1)


def statistic_logs(total: torch.Tensor, seen: int, readout: Readout) -> dict[str, float]:
    """The epoch's training statistic from the summed :func:`step_statistic` ``(M,)`` over ``seen`` examples."""
    per_example = total / max(seen, 1)
    if readout.is_regression:
        return {"train_rmse": per_example.sqrt().mean().item()}
    return {"train_acc": per_example.mean().item()}


def _finite_members(values: torch.Tensor) -> list[int]:
    return [m for m in range(values.shape[0]) if not torch.isfinite(values[m]).all()]


def validation_logs(model: Any, data: Data, tta: Sequence[Transform] | None, readout: Readout, stage: str,
                    epoch: int, kept: str) -> dict[str, Any]:
    """The validation part of an epoch's log line (see the module docstring).

    Raises:
        NonFiniteLossError: a member's validation outputs became NaN/inf.
    """
    pd = predictive(model, data.val, tta, cpu=False, readout=readout)  # type: ignore[arg-type]
    values = pd.probs if isinstance(pd, Categorical) else pd.mean + pd.var
    bad = _finite_members(values)
    if bad:
        raise NonFiniteLossError(f"{stage}: the validation outputs became non-finite after epoch {epoch} "
                                 f"(member(s) {bad}){kept}; lower the learning rate or set train.grad_clip")
    y = data.val.tensors()[1].to(values.device)  # type: ignore[union-attr]
    if isinstance(pd, Gaussian):
        return _regression_logs(pd, y)
    mean = pd.probs.mean(0)
    member_acc, member_nll = accuracy(pd.probs, y), nll(pd.probs, y)
    return {
        "val_acc": float(accuracy(mean, y)),
        "val_nll": float(nll(mean, y)),
        "val_member_acc": float(member_acc.mean()),
        "val_member_accs": [round(float(v), 6) for v in member_acc],
        "val_member_nll": [round(float(v), 6) for v in member_nll],
    }


def _regression_logs(pd: Gaussian, y: torch.Tensor) -> dict[str, Any]:
    member_nll = gaussian_nll(pd.mean, pd.var, y).tolist()  # (M,): each member's own Gaussian
    member_rmse = rmse(pd.mean, y).tolist()
    return {
        "val_nll": float(mixture_nll(pd, y)),
        "val_rmse": float(rmse(pd, y)),
        "val_crps": float(crps_mixture(pd, y)),
        "val_member_rmse": [round(v, 6) for v in member_rmse],
        "val_member_nll": [round(v, 6) for v in member_nll],
    }
