"""The training engine: M members in one vectorised pass, checkpointed and resumable.

One :class:`Trainer` runs one *stage* of a method: it steps every member of an
:class:`~ensemblekit.ensemble.Ensemble` on the sum of the member losses (so one
optimizer over the stacked tensors is exactly M independent optimizers), follows a
pure ``step -> lr`` policy through ``LambdaLR``, logs each epoch to ``metrics.jsonl``,
writes an atomic checkpoint at least every epoch, and stops with a clear error when
the loss becomes NaN/inf, keeping the last good checkpoint.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .._runtime import tune_allocator
from ..data.batching import Batch, LoaderBatcher, TensorBatcher
from ..data.dataset import Data
from ..ensemble import Ensemble
from ..errors import NonFiniteLossError
from ..metrics.classification import accuracy, nll
from ..seeding import derive_seed
from .callbacks import Callback
from .checkpoint import RunDir
from .config import TrainConfig
from .optim import build_optimizer, clip_grad_norm_per_member, optimizer_lr
from .schedules import Schedule, build_schedule, lambda_lr

__all__ = ["Trainer", "cross_entropy_per_member", "resolve_device", "LossFn"]

LossFn = Callable[[torch.Tensor, Batch], torch.Tensor]


def cross_entropy_per_member(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Mean cross-entropy of each member: logits ``(M, B, C)`` -> ``(M,)``."""
    m, b, c = logits.shape
    y = batch.y.reshape(-1) if batch.per_member else batch.y.repeat(m)
    return F.cross_entropy(logits.reshape(m * b, c), y, reduction="none").reshape(m, b).mean(1)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class Trainer:
    """Train the members of ``ensemble`` on ``data.train`` for one stage.

    Args:
        ensemble: the members to train (moved to the configured device).
        data: the dataset (``data.val`` is evaluated every ``eval_every`` epochs).
        config: a :class:`TrainConfig` or a dict of its fields.
        seed: the run seed; data orders derive from it.
        run: a :class:`RunDir` for checkpoints and logs (``None``: in memory only).
        stage: the stage name (checkpoint file and log tag).
        loss_fn: ``(logits (M,B,C), batch) -> (M,)`` per-member losses (default: cross-entropy).
        callbacks: hooks (FGE collection, SWA averaging, early stopping...).
        schedule: a ``step -> lr`` policy overriding ``config.schedule``.
        resume: load this stage's checkpoint when it exists (default True; a run
            directory never silently restarts a finished stage).

    Attributes (after :meth:`fit`):
        ensemble: the trained ensemble. history: per-epoch log records. wall_s:
        seconds spent training (accumulated across resumes). step: iterations done.
    """

    def __init__(
        self,
        ensemble: Ensemble,
        data: Data,
        config: TrainConfig | Mapping[str, Any],
        *,
        seed: int = 0,
        run: RunDir | None = None,
        stage: str = "train",
        loss_fn: LossFn | None = None,
        callbacks: Sequence[Callback] = (),
        schedule: Schedule | None = None,
        resume: bool = True,
    ) -> None:
        self.config = config if isinstance(config, TrainConfig) else TrainConfig(**dict(config))
        self.device = resolve_device(self.config.device)
        self.ensemble = ensemble if ensemble.device == self.device else ensemble.to(self.device)
        self.data = data
        self.seed = int(seed)
        self.run = run
        self.stage = stage
        self.loss_fn = loss_fn or cross_entropy_per_member
        self.callbacks = list(callbacks)
        self.resume = resume
        m = self.ensemble.num_members
        if data.train.in_memory:
            self.batcher: TensorBatcher | LoaderBatcher = TensorBatcher(
                data.train.x, data.train.y, batch_size=self.config.batch_size, members=m,
                order=self.config.data_order, seed=derive_seed(self.seed, stage, "data"), device=self.device,
            )
        else:
            self.batcher = LoaderBatcher(data.train.loader, device=self.device)  # type: ignore[arg-type]
        self.steps_per_epoch = self.batcher.steps_per_epoch
        self.total_steps = self.config.epochs * self.steps_per_epoch
        self.base_lr = optimizer_lr(self.config.optimizer)
        self.schedule = schedule or build_schedule(
            self.config.schedule, lr=self.base_lr, total_steps=self.total_steps, steps_per_epoch=self.steps_per_epoch
        )
        self.optimizer = build_optimizer(self.config.optimizer, self.ensemble.parameters())
        self.history: list[dict[str, Any]] = []
        self.epoch = 0
        self.step = 0
        self.wall_s = 0.0
        self.stop = False
        self.finished = False

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        opt = self.optimizer.state_dict()
        state: dict[str, Any] = {
            "ensemble": self.ensemble.state_tensors(),
            "optimizer": {"state": {str(k): v for k, v in opt["state"].items()}, "param_groups": opt["param_groups"]},
            "rng": {"cpu": torch.get_rng_state()},
            "callbacks": {f"{i}": cb.state_dict() for i, cb in enumerate(self.callbacks)},
            "epoch": self.epoch,
            "step": self.step,
            "wall_s": self.wall_s,
            "finished": self.finished,
            "history": self.history,
        }
        if self.device.type == "cuda":
            state["rng"]["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.ensemble.load_state_tensors(state["ensemble"])
        opt = state["optimizer"]
        self.optimizer.load_state_dict({"state": {int(k): v for k, v in opt["state"].items()}, "param_groups": opt["param_groups"]})
        torch.set_rng_state(state["rng"]["cpu"].cpu())
        if "cuda" in state["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"].cpu(), self.device)
        for i, cb in enumerate(self.callbacks):
            cb.load_state_dict(state["callbacks"].get(f"{i}", {}))
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.wall_s, self.finished = float(state["wall_s"]), bool(state["finished"])
        self.history = list(state["history"])

    def _checkpoint(self) -> None:
        if self.run is not None:
            self.run.save_checkpoint(self.stage, self.state_dict())

    # ------------------------------------------------------------------ loop
    def fit(self) -> Ensemble:
        """Train to the configured number of epochs (or resume and finish); returns the ensemble.

        Randomness inside training (dropout, augmentation) comes from a generator seeded
        from ``(seed, stage)`` and restored on resume; the caller's global RNG is untouched.
        """
        if self.device.type == "cpu":
            tune_allocator()
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(derive_seed(self.seed, self.stage, "rng"))
            return self._fit()

    def _fit(self) -> Ensemble:
        if self.run is not None and self.resume:
            state = self.run.load_checkpoint(self.stage, device=self.device)
            if state is not None:
                self.load_state_dict(state)
                if self.finished:
                    return self.ensemble
                self.run.truncate_log(self.stage, self.epoch)
        scheduler = lambda_lr(self.optimizer, self.schedule, self.base_lr, last_step=self.step - 1)
        for cb in self.callbacks:
            cb.on_train_start(self)
        show = self.config.progress if self.config.progress is not None else sys.stderr.isatty()
        bar = tqdm(total=self.total_steps, initial=self.step, desc=self.stage, disable=not show, leave=False, dynamic_ncols=True, mininterval=0.5)
        try:
            while self.epoch < self.config.epochs and not self.stop:
                self._run_epoch(scheduler, bar)
        finally:
            bar.close()
        self.finished = True
        for cb in self.callbacks:
            cb.on_train_end(self)
        self._checkpoint()
        return self.ensemble

    def _run_epoch(self, scheduler: torch.optim.lr_scheduler.LambdaLR, bar: tqdm) -> None:
        t0 = time.perf_counter()
        ens, m = self.ensemble, self.ensemble.num_members
        ens.train()
        loss_sum = torch.zeros(m, device=self.device)
        correct = torch.zeros(m, device=self.device)
        seen = 0
        start = self.step - self.epoch * self.steps_per_epoch
        for batch in self.batcher.epoch(self.epoch, start_step=start):
            lr = self.optimizer.param_groups[0]["lr"]
            logits = ens(batch.x, per_member=batch.per_member)
            losses = self.loss_fn(logits, batch)
            loss = losses.sum()
            if not torch.isfinite(loss):
                self._diverged(losses, lr)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.config.grad_clip is not None:
                self._clip()
            self.optimizer.step()
            scheduler.step()
            self.step += 1
            with torch.no_grad():
                n = batch.y.shape[-1]
                loss_sum += losses.detach() * n
                y = batch.y if batch.per_member else batch.y.unsqueeze(0)
                correct += (logits.argmax(-1) == y).sum(-1)
                seen += n
            for cb in self.callbacks:
                cb.on_step_end(self, self.step, batch)
            bar.update(1)
        self.epoch += 1
        self.wall_s += time.perf_counter() - t0
        logs: dict[str, Any] = {
            "stage": self.stage,
            "epoch": self.epoch,
            "step": self.step,
            "lr": self.optimizer.param_groups[0]["lr"],
            "train_loss": (loss_sum / max(seen, 1)).mean().item(),
            "train_acc": (correct / max(seen, 1)).mean().item(),
        }
        if self.data.val is not None and (self.epoch % self.config.eval_every == 0 or self.epoch == self.config.epochs):
            logs.update(self.evaluate_val())
        logs["wall_s"] = round(self.wall_s, 3)
        self.history.append(logs)
        for cb in self.callbacks:
            cb.on_epoch_end(self, self.epoch, logs)
        if self.run is not None:
            self.run.log(logs)
        if self.epoch % self.config.checkpoint_every == 0 or self.epoch == self.config.epochs or self.stop:
            self._checkpoint()
        bar.set_postfix({k: f"{logs[k]:.4g}" for k in ("train_loss", "val_acc") if k in logs}, refresh=False)

    @torch.no_grad()
    def evaluate_val(self) -> dict[str, float]:
        """Validation accuracy and NLL of the ensemble and the mean member."""
        probs = self.ensemble.predict_proba(self.data.val)  # type: ignore[arg-type]
        y = self.data.val.tensors()[1].to(probs.device)  # type: ignore[union-attr]
        mean = probs.mean(0)
        return {
            "val_acc": float(accuracy(mean, y)),
            "val_nll": float(nll(mean, y)),
            "val_member_acc": float(accuracy(probs, y).mean()),
        }

    def _clip(self) -> None:
        for group in self.ensemble.groups:
            params = [p for p in group.params.values() if p.requires_grad]
            clip_grad_norm_per_member(params, self.config.grad_clip, group.num_members)  # type: ignore[arg-type]

    def _diverged(self, losses: torch.Tensor, lr: float) -> None:
        bad = [i for i, v in enumerate(losses.detach().tolist()) if not torch.isfinite(torch.tensor(v))]
        where = f"; the last good checkpoint is kept in {self.run.checkpoint_path(self.stage)}" if self.run else ""
        raise NonFiniteLossError(
            f"{self.stage}: the loss became non-finite at epoch {self.epoch + 1}, iteration {self.step + 1} "
            f"(member(s) {bad}, lr={lr:.3g}){where}; lower the learning rate or set train.grad_clip"
        )
