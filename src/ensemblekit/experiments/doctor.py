"""``ensemblekit doctor``: the first sanity checks of a training recipe, before a long run
(Karpathy, "A Recipe for Training Neural Networks", 2019; docs/methods.md, the training toolkit).

1. The initial loss of a fresh network should be close to ``log(C)`` (uniform predictions).
2. A network should overfit a tiny subset (two batches) to ~100% training accuracy.
3. A learning-rate range test (loss vs an exponentially growing rate) locates where
   training starts to diverge and suggests a rate (a tenth of the rate with the lowest
   loss, Smith's rule of thumb). The configured rate fails the check when it is more than
   10x the suggestion or within 3x of the divergence point (or past it); the message says
   which way to move it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..config import RunConfig
from ..data.dataset import Data, Split
from ..ensemble import Ensemble
from ..errors import NonFiniteLossError
from ..methods.base import check_model_fits
from ..models.registry import model_factory
from ..report.plots import line_plot
from ..training.callbacks import Callback
from ..training.engine import Trainer
from ..training.optim import optimizer_lr

__all__ = ["Check", "run_doctor", "initial_loss_check", "overfit_check", "lr_range_test"]


@dataclass
class Check:
    name: str
    passed: bool
    detail: str
    value: float | None = None


def _factory(cfg: RunConfig, data: Data):  # noqa: ANN202
    factory = model_factory(cfg.method.model_spec(cfg.model), input_shape=data.input_shape, num_classes=data.num_classes)
    check_model_fits(factory, data)
    return factory


@torch.no_grad()
def initial_loss_check(cfg: RunConfig, data: Data, tolerance: float = 0.25) -> Check:
    """Mean cross-entropy of a fresh network on up to 1000 training examples vs ``log(C)``."""
    ens = Ensemble.from_factory(_factory(cfg, data), seeds=[cfg.seed]).eval()
    x, y = data.train.tensors()
    logits = ens(x[:1000])[0]
    loss = float(F.cross_entropy(logits, y[:1000]))
    expected = math.log(data.num_classes)
    ok = abs(loss - expected) <= tolerance * expected
    detail = f"initial loss {loss:.3f} vs log(C) = {expected:.3f}"
    detail += "" if ok else " (far from uniform predictions: check the initialisation, the output scale or the labels)"
    return Check("initial loss ~ log(C)", ok, detail, loss)


class _Record(Callback):
    def __init__(self, limit: float | None = None) -> None:
        self.losses: list[float] = []
        self.lrs: list[float] = []
        self.limit = limit

    def on_step_end(self, trainer: Trainer, step: int, batch: Any) -> None:
        self.losses.append(float(trainer.last_losses.mean()))  # type: ignore[union-attr]
        self.lrs.append(trainer.schedule(step - 1))
        if self.limit is not None and len(self.losses) > 5:
            smooth = sum(self.losses[-3:]) / 3
            if smooth > self.limit * min(self.losses) or not math.isfinite(smooth):
                raise _Diverged


class _Diverged(Exception):
    pass


def overfit_check(cfg: RunConfig, data: Data, batches: int = 2, steps: int = 300, target: float = 0.99) -> Check:
    """Train one network on ``batches`` batches with the configured optimizer (constant rate) for up to ``steps`` iterations."""
    n = min(len(data.train), batches * cfg.train.batch_size)
    x, y = data.train.tensors()
    tiny = Data(train=Split(x[:n], y[:n]), test=Split(x[:n], y[:n]), num_classes=data.num_classes, input_shape=data.input_shape, name="tiny")
    epochs = max(1, steps // max(1, math.ceil(n / cfg.train.batch_size)))
    train = cfg.train.model_copy(update={"epochs": epochs, "schedule": "constant", "progress": False, "early_stopping": None, "augment": [], "mixup": 0.0, "eval_every": 10**6})
    ens = Ensemble.from_factory(_factory(cfg, data), seeds=[cfg.seed])
    try:
        trainer = Trainer(ens, tiny, train, seed=cfg.seed, stage="overfit")
        ens = trainer.fit()
    except NonFiniteLossError:
        return Check("overfit 2 batches", False, f"the loss became NaN/inf while fitting {n} examples: the learning rate ({optimizer_lr(cfg.train.optimizer):g}) is too high")
    acc = float((ens.predict_proba(tiny.train.x)[0].argmax(-1) == tiny.train.y).float().mean())
    ok = acc >= target
    detail = f"training accuracy {100 * acc:.1f}% on {n} examples after {trainer.step} iterations"
    detail += "" if ok else " (cannot memorise a tiny subset: learning rate, capacity or a bug in the data pipeline)"
    return Check("overfit 2 batches", ok, detail, acc)


def lr_range_test(cfg: RunConfig, data: Data, out_png: str | None, lr_min: float = 1e-6, lr_max: float = 10.0, steps: int = 100) -> Check:
    """Loss vs an exponentially increasing learning rate; suggests ``lr_at_min_loss / 10``."""
    spe = math.ceil(len(data.train) / cfg.train.batch_size)
    ratio = lr_max / lr_min

    def policy(step: int) -> float:
        return lr_min * ratio ** (min(step, steps - 1) / (steps - 1))

    train = cfg.train.model_copy(update={"epochs": max(1, math.ceil(steps / spe)), "progress": False, "early_stopping": None, "eval_every": 10**6})
    noval = Data(train=data.train, test=data.test, num_classes=data.num_classes, input_shape=data.input_shape, name=data.name)
    rec = _Record(limit=4.0)
    ens = Ensemble.from_factory(_factory(cfg, data), seeds=[cfg.seed])
    try:
        Trainer(ens, noval, train, seed=cfg.seed, stage="lr_range", schedule=policy, callbacks=[rec]).fit()
    except (_Diverged, NonFiniteLossError):
        pass
    losses, lrs = rec.losses[:steps], rec.lrs[:steps]
    if len(losses) < 5:
        return Check("learning-rate range test", False, "the loss diverged immediately even at 1e-6: check the model and data")
    smooth = [sum(losses[max(0, i - 2) : i + 1]) / len(losses[max(0, i - 2) : i + 1]) for i in range(len(losses))]
    best = min(range(len(smooth)), key=smooth.__getitem__)
    suggestion = lrs[best] / 10
    diverged_at = lrs[len(losses) - 1] if len(losses) < steps else None
    configured = optimizer_lr(cfg.train.optimizer)
    if out_png:
        line_plot({"training loss": (lrs, smooth)}, out_png, "learning rate", "loss (3-step mean)", title=f"LR range test: suggested {suggestion:.2g}", logx=True)
    detail = f"loss is lowest at lr {lrs[best]:.2g}; suggested lr {suggestion:.2g}"
    if diverged_at is not None:
        detail += f"; diverges from about {diverged_at:.2g}"
    detail += f"; configured lr {configured:g}"
    problems = []
    if diverged_at is not None and configured >= diverged_at:
        problems.append("is beyond the divergence point")
    elif diverged_at is not None and configured * 3 > diverged_at:
        problems.append(f"is within 3x of the divergence point ({diverged_at:.2g})")
    if configured > 10 * suggestion:
        problems.append("is more than 10x the suggestion")
    if problems:
        detail += " " + " and ".join(problems) + f": lower it, towards {suggestion:.2g}"
    return Check("learning-rate range test", not problems, detail, suggestion)


def run_doctor(cfg: RunConfig, data: Data, out_png: str | None = None) -> list[Check]:
    """All three checks, in order (classification: they read cross-entropy against log C and
    training accuracy; regression data is refused in one line).

    Raises:
        ConfigError: regression data.
    """
    if data.is_regression:
        from ..errors import ConfigError

        raise ConfigError(f"doctor checks classifiers (initial loss vs log C, memorising two batches, the LR range test on "
                          f"cross-entropy); {data.name!r} is regression data: train it with a short train.epochs instead")
    return [initial_loss_check(cfg, data), overfit_check(cfg, data), lr_range_test(cfg, data, out_png)]
