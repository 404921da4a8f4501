"""The training engine: M members in one vectorised pass, checkpointed and resumable.

One :class:`Trainer` runs one *stage* of a method: it steps every member of a
:class:`~ensemblekit.training.protocol.TrainableModel` (an
:class:`~ensemblekit.ensemble.Ensemble`, a curve, a hypernetwork, a network whose members
share parameters) on the sum of the member losses (so one optimizer over stacked tensors
is exactly M independent optimizers), follows a pure ``step -> lr`` policy through
``LambdaLR``, logs each epoch to ``metrics.jsonl`` (and each change of thread count the
automatic thread policy makes: :func:`ensemblekit.threads.follow_load`), writes an atomic
checkpoint at least every epoch, stops with a clear error when the loss becomes NaN/inf
(keeping the last good checkpoint), and measures its cost: seconds, and the FLOPs of its training steps
(:mod:`ensemblekit.training.flops`, counted on the first step it runs).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable, Mapping, Sequence

import torch
from tqdm.auto import tqdm

from .._runtime import tune_allocator
from ..data.augment import mixup
from ..data.batching import Batch
from ..data.dataset import Data
from ..errors import DataError, NonFiniteLossError
from ..metrics.head_outputs import Readout
from ..seeding import derive_seed
from ..threads import follow_load
from .callbacks import Callback
from .checkpoint import RunDir
from .config import TrainConfig
from .flops import flop_counter
from .penalties import member_penalties
from .chunks import check_member_chunk, chunked_losses, probe_member_chunk
from .precision import autocast
from .protocol import TrainableModel, check_trainable
from .schedules import Schedule, lambda_lr
from .tasks import cross_entropy_per_member, statistic_logs, step_statistic, task_loss, validation_logs
from .wiring import (LossFn, build_batcher, build_forward, build_optimization, build_transforms, place_model, resolve_device,
                     stage_callbacks, stage_loss, stage_schedule, train_config)

__all__ = ["Trainer", "cross_entropy_per_member", "resolve_device", "LossFn"]

_STATE_KEYS = ("ensemble", "optimizer", "rng", "callbacks", "epoch", "step", "wall_s", "finished", "history")


def _along_batch(t: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """Reorder ``t`` (``(B,)`` or ``(M, B)``) along its batch axis by ``perm`` of the same shape."""
    return t[perm] if t.dim() == 1 else torch.gather(t, 1, perm)


class Trainer:
    """Train the members of ``model`` on ``data.train`` for one stage.

    ``model`` is any :class:`~ensemblekit.training.protocol.TrainableModel`: an
    :class:`~ensemblekit.ensemble.Ensemble`, a curve, a hypernetwork or a network whose
    members share parameters; per-member clipping, penalties and optimizer settings follow
    its :meth:`param_groups` (see the protocol for what they mean with shared tensors). It is
    built from the pieces of :mod:`ensemblekit.training.wiring`, in the order ``__init__``
    lists them (a configuration with several faults is refused for the first).

    Args:
        model: the members to train (a copy on the configured device when it is elsewhere).
        data: the dataset (``data.val`` is evaluated every ``eval_every`` epochs).
        config: a :class:`TrainConfig` or a dict of its fields.
        seed: the run seed; data orders derive from it.
        run: a :class:`RunDir` for checkpoints and logs (``None``: in memory only).
        stage: the stage name (checkpoint file and log tag).
        loss_fn: ``(logits (M,B,C), batch) -> (M,)`` per-member losses (default: ``train.loss``
            for the data's task, :func:`ensemblekit.training.tasks.task_loss`).
        loss_for: instead of ``loss_fn``, a function of the model being trained (the copy on
            the training device) returning its loss: for losses that read the model's own
            state (a hypernetwork's KL term, a curve's weight decay at the sampled point).
        callbacks: hooks (FGE collection, SWA averaging, early stopping...).
        schedule: a ``step -> lr`` policy overriding ``config.schedule``.
        resume: load this stage's checkpoint when it exists (default True; a run
            directory never silently restarts a finished stage).
        warm_start: a state to start from when there is no checkpoint of this stage:
            ``{"ensemble": tensors, "optimizer": optimizer state (optional)}`` (e.g. FGE
            starting from a pre-trained run, momentum buffers included).

    Attributes (after :meth:`fit`):
        model (alias ``ensemble``): the trained model. history: per-epoch log records.
        wall_s: seconds spent training (accumulated across resumes). step: iterations done.
        flops_per_step, examples_per_step: the measured FLOPs of one training step (all
        members, forward + backward) and the examples it consumed; :meth:`cost` turns
        them into the stage's training FLOPs.
    """

    def __init__(
        self,
        model: TrainableModel,
        data: Data,
        config: TrainConfig | Mapping[str, Any],
        *,
        seed: int = 0,
        run: RunDir | None = None,
        stage: str = "train",
        loss_fn: LossFn | None = None,
        loss_for: Callable[[TrainableModel], LossFn] | None = None,
        callbacks: Sequence[Callback] = (),
        schedule: Schedule | None = None,
        resume: bool = True,
        warm_start: Mapping[str, Any] | None = None,
    ) -> None:
        self.config = train_config(config)
        check_trainable(model)
        self.model, self.device = place_model(model, self.config, stage)
        self.data, self.seed, self.run, self.stage = data, int(seed), run, stage
        self.readout = Readout.for_data(data)  # the outputs in the units the model trains in (tasks.py)
        self.loss_fn = stage_loss(self.model, stage, loss_fn, loss_for, default=task_loss(self.config, data))
        self.callbacks = stage_callbacks(self.config, self.model, run, stage, callbacks)
        self.resume, self.warm_start = resume, warm_start
        self.batcher = build_batcher(data, self.config, self.model.num_members, derive_seed(self.seed, stage, "data"), self.device)
        self.steps_per_epoch = self.batcher.steps_per_epoch
        lr = stage_schedule(self.config, self.steps_per_epoch, schedule)
        self.schedule, self.base_lr, self.total_steps = lr.policy, lr.base_lr, lr.total_steps
        self.passes = self.config.passes(self.steps_per_epoch)  # the last one is cut short when train.steps is not whole epochs
        opt = build_optimization(self.model, self.config, stage)
        self.layout, self.optimizer, self.scaler, self._stepped = opt.layout, opt.optimizer, opt.scaler, opt.stepped
        self.member_chunk: int | str | None = check_member_chunk(self, self.model.num_members)
        self._forward: Callable[..., torch.Tensor] = build_forward(self.model, self.config, stage)
        self.augment, self.tta = build_transforms(self.config, data.input_shape)
        self._start_progress()

    def _start_progress(self) -> None:
        """The stage's progress before its first step (a checkpoint replaces it on resume)."""
        self.history: list[dict[str, Any]] = []
        self.epoch = 0
        self.step = 0
        self.wall_s = 0.0
        self.stop = False
        self.finished = False
        self.last_losses: torch.Tensor | None = None
        self.flops_per_step: float | None = None
        self.examples_per_step = 0
        self.examples_seen = 0

    @property
    def ensemble(self) -> TrainableModel:
        """The model being trained (the name callbacks have always used)."""
        return self.model

    def cost(self) -> dict[str, Any]:
        """This stage's measured cost: ``{seconds, steps, examples, flops, parameters}``.

        ``flops`` is the FLOPs of one training step per example it consumed, times every
        example consumed over the stage (forward + backward of all members); ``None`` when
        no step ran in this process or a checkpoint (a stage finished before FLOPs were
        recorded)."""
        flops = None
        if self.flops_per_step is not None and self.examples_per_step:
            flops = self.flops_per_step / self.examples_per_step * self.examples_seen
        params = sum(t.numel() for g in self.model.param_groups() for t in g.trainable())
        return {"seconds": self.wall_s, "steps": self.step, "examples": self.examples_seen, "flops": flops, "parameters": params}

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        opt = self.optimizer.state_dict()
        state: dict[str, Any] = {
            "ensemble": self.model.state_tensors(),
            "optimizer": {"state": {str(k): v for k, v in opt["state"].items()}, "param_groups": opt["param_groups"]},
            "rng": {"cpu": torch.get_rng_state()},
            "callbacks": {f"{i}": cb.state_dict() for i, cb in enumerate(self.callbacks)},
            "epoch": self.epoch,
            "step": self.step,
            "wall_s": self.wall_s,
            "finished": self.finished,
            "history": self.history,
            "cost": {"flops_per_step": self.flops_per_step, "examples_per_step": self.examples_per_step, "examples_seen": self.examples_seen},
        }
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        if self.config.member_chunk == "auto" and isinstance(self.member_chunk, int):
            state["member_chunk"] = self.member_chunk
        if self.device.type == "cuda":
            state["rng"]["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.model.load_state_tensors(state["ensemble"])
        self.layout.refresh_from_model()
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
        cost = state.get("cost") or {}
        self.flops_per_step = cost.get("flops_per_step")
        self.examples_per_step = int(cost.get("examples_per_step") or 0)
        self.examples_seen = int(cost.get("examples_seen") or 0)
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if self.config.member_chunk == "auto" and state.get("member_chunk"):
            self.member_chunk = int(state["member_chunk"])

    def _checkpoint(self) -> None:
        if self.run is not None:
            self.run.save_checkpoint(self.stage, self.state_dict())

    # ------------------------------------------------------------------ loop
    def fit(self) -> TrainableModel:
        """Train to the configured number of epochs (or resume and finish); returns the ensemble.

        Randomness inside training (dropout, augmentation) comes from a generator seeded
        from ``(seed, stage)`` and restored on resume; the caller's global RNG is untouched.
        """
        if self.device.type == "cpu":
            tune_allocator()
        devices = [d for d in dict.fromkeys(getattr(self.model, "devices", [self.device])) if d.type == "cuda"]
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(derive_seed(self.seed, self.stage, "rng"))
            return self._fit()

    def _fit(self) -> TrainableModel:
        state = (self.run.load_checkpoint(self.stage, device=self.device, required=_STATE_KEYS)
                 if self.run is not None and self.resume else None)
        if state is not None:
            try:
                self.load_state_dict(state)
            except (KeyError, ValueError, RuntimeError, TypeError) as exc:
                raise DataError(f"{self.run.checkpoint_path(self.stage)}: cannot be resumed ({type(exc).__name__}: {exc}); "  # type: ignore[union-attr]
                                "it is damaged or from another config: delete it to retrain this stage") from None
            if self.finished:
                return self._result()
        if self.run is not None:
            # lines logged after the state we start from (an epoch logged, then killed before its checkpoint) are replayed
            self.run.truncate_log(self.stage, self.epoch)
        if state is None and self.warm_start is not None:
            self._load_warm_start(self.warm_start)
        scheduler = lambda_lr(self.optimizer, self.schedule, self.base_lr, last_step=self.step - 1)
        for cb in self.callbacks:
            cb.on_train_start(self)
        show = self.config.progress if self.config.progress is not None else sys.stderr.isatty()
        bar = tqdm(total=self.total_steps, initial=self.step, desc=self.stage, disable=not show, leave=False, dynamic_ncols=True, mininterval=0.5)
        try:
            while self.epoch < self.passes and not self.stop:
                self._run_epoch(scheduler, bar)
        finally:
            bar.close()
        self.finished = True
        for cb in self.callbacks:
            cb.on_train_end(self)
        self._checkpoint()
        return self._result()

    def _load_warm_start(self, warm: Mapping[str, Any]) -> None:
        """Start from another stage's weights and, when given, its optimizer moments (momentum
        buffers, Adam statistics) under this stage's hyperparameters."""
        self.model.load_state_tensors(warm["ensemble"])
        self.layout.refresh_from_model()
        if warm.get("optimizer") is not None:
            current = self.optimizer.state_dict()
            current["state"] = {int(k): v for k, v in warm["optimizer"]["state"].items()}
            self.optimizer.load_state_dict(current)

    def _result(self) -> TrainableModel:
        """The trained model; members placed on several devices are gathered on the first."""
        merged = getattr(self.model, "merged", None)
        return merged() if merged is not None else self.model

    def _run_epoch(self, scheduler: torch.optim.lr_scheduler.LambdaLR, bar: tqdm) -> None:
        t0 = time.perf_counter()
        loss_sum, correct, seen = self._train_epoch(scheduler, bar)
        self.epoch += 1
        self.wall_s += time.perf_counter() - t0
        logs = self._epoch_logs(loss_sum, correct, seen)
        self.history.append(logs)
        for cb in self.callbacks:
            cb.on_epoch_end(self, self.epoch, logs)
        if self.run is not None:
            self.run.log(logs)
        if self.epoch % self.config.checkpoint_every == 0 or self.epoch == self.passes or self.stop:
            self._checkpoint()
        bar.set_postfix({k: f"{logs[k]:.4g}" for k in ("train_loss", "val_acc") if k in logs}, refresh=False)

    def _train_epoch(self, scheduler: torch.optim.lr_scheduler.LambdaLR, bar: tqdm) -> tuple[torch.Tensor, torch.Tensor, int]:
        """The steps of one epoch (from where a resumed stage stopped); returns each member's
        summed loss ``(M,)`` and training statistic ``(M,)`` (correct count, or squared error of
        regression means: :func:`~ensemblekit.training.tasks.step_statistic`) over the ``seen`` examples."""
        ens, m = self.model, self.model.num_members
        ens.train()
        loss_sum = torch.zeros(m, device=self.device)
        correct = torch.zeros(m, device=self.device)
        seen = 0
        start = self.step - self.epoch * self.steps_per_epoch
        for batch in self.batcher.epoch(self.epoch, start_step=start):
            if self.step >= self.total_steps:  # train.steps ends this pass early
                break
            lr = self.optimizer.param_groups[0]["lr"]
            self.optimizer.zero_grad(set_to_none=True)
            losses, logits, used = self._forward_backward(batch, lr)
            self._optimizer_step()
            scheduler.step()
            self.step += 1
            self._follow_load()
            with torch.no_grad():
                n = used.y.shape[1] if used.per_member else used.y.shape[0]
                self.examples_seen += n
                loss_sum += losses.detach() * n
                correct += step_statistic(logits, used, self.readout)
                seen += n
            for cb in self.callbacks:
                cb.on_step_end(self, self.step, batch)
            bar.update(1)
        return loss_sum, correct, seen

    def _epoch_logs(self, loss_sum: torch.Tensor, correct: torch.Tensor, seen: int) -> dict[str, Any]:
        """The epoch's line of ``metrics.jsonl``: training loss and accuracy, validation when due,
        fp16 loss scaling, the member chunk in use, the stage's seconds so far."""
        logs: dict[str, Any] = {
            "stage": self.stage,
            "epoch": self.epoch,
            "step": self.step,
            "lr": self.optimizer.param_groups[0]["lr"],
            "train_loss": (loss_sum / max(seen, 1)).mean().item(),
            **statistic_logs(correct, seen, self.readout),
        }
        if self.data.val is not None and (self.epoch % self.config.eval_every == 0 or self.epoch == self.passes):
            logs.update(self.evaluate_val())
        if self.scaler is not None:
            logs["loss_scale"] = self.scaler.scale
            logs["fp16_skipped"] = self.scaler.pop_skipped()  # per member, this epoch
        if isinstance(self.member_chunk, int):
            logs["member_chunk"] = self.member_chunk
        logs["wall_s"] = round(self.wall_s, 3)
        return logs

    def _follow_load(self) -> None:
        """Let the automatic thread policy follow the free cores (a clock read until it is due,
        nothing when threads are pinned); a change of thread count is a line of ``metrics.jsonl``."""
        event = follow_load()
        if event is not None and self.run is not None:
            self.run.log({"stage": self.stage, "epoch": self.epoch + 1, "step": self.step, **event})

    def _optimizer_step(self) -> None:
        """Clip, decay and step (fp16: unscale first; members whose gradient overflowed skip)."""
        if self.scaler is None:
            self._clip_decay_step()
        else:
            bad = self.scaler.unscale_(self._stepped)
            with self.scaler.skipping(self.optimizer, self._stepped, bad):
                if not bool(bad.all()):
                    self._clip_decay_step()
        self.layout.sync_to_model()

    def _clip_decay_step(self) -> None:
        if self.config.grad_clip is not None:
            self.layout.clip(self.config.grad_clip)
        if self.config.weight_decay:
            self._decay()
        self.optimizer.step()

    def _backward(self, losses: torch.Tensor, lr: float, first: int = 0) -> None:
        loss = losses.sum()
        if not torch.isfinite(loss):
            self._diverged(losses, lr, first)
        (loss * self.scaler.scale if self.scaler is not None else loss).backward()

    def _forward_backward(self, batch: Batch, lr: float) -> tuple[torch.Tensor, torch.Tensor, Batch]:
        """Losses and logits of one step, gradients accumulated; the first step this process
        runs is counted by the FLOP counter (it observes, it does not change the numbers)."""

        def step() -> tuple[torch.Tensor, torch.Tensor, Batch]:
            if self.member_chunk == "auto":
                self.member_chunk = probe_member_chunk(self, batch, lr)
                losses, logits, used = self._last_probe
            elif self.member_chunk is not None and self.member_chunk < self.model.num_members:
                losses, logits, used = chunked_losses(self, batch, lr, self.member_chunk)
            else:
                losses, logits, used = self._losses(batch)
                self._backward(losses, lr)
            self.last_losses = losses.detach()
            return losses, logits, used

        if self.flops_per_step is not None:
            return step()
        with flop_counter() as counter:
            out = step()
        used = out[2]
        self.flops_per_step = float(counter.get_total_flops())
        self.examples_per_step = int(used.y.shape[1] if used.per_member else used.y.shape[0])
        return out

    @torch.no_grad()
    def evaluate_val(self) -> dict[str, Any]:
        """Validation metrics of the ensemble and each member (:func:`~ensemblekit.training.tasks.validation_logs`)."""
        return validation_logs(self.model, self.data, self.tta, self.readout, self.stage, self.epoch, self._kept())

    def _targets(self, batch: Batch) -> Batch:
        """The batch with the labels of the examples the model's last forward really used
        (a model that re-pairs or repeats examples, like MIMO, says so by ``targets(y)``)."""
        targets = getattr(self.model, "targets", None)
        if targets is None:
            return batch
        y = targets(batch.y)
        return batch if y is batch.y else Batch(batch.x, y, None, batch.target_dims)

    def _inputs(self, batch: Batch) -> tuple[Batch, tuple[Batch, torch.Tensor] | None]:
        """The step's batch with its (augmented, mixed) inputs as ``x`` (what the loss sees, so a
        loss that reads the inputs, a distillation teacher's, sees what the model saw) and, with
        mixup, the partner batch and lambda."""
        x = self.augment(batch.x, None) if self.augment is not None else batch.x
        if self.config.mixup <= 0:
            return (batch if x is batch.x else Batch(x, batch.y, batch.idx, batch.target_dims)), None
        x, perm, lam = mixup(x, batch.y, self.config.mixup)
        partner = Batch(x, _along_batch(batch.y, perm), _along_batch(batch.idx, perm) if batch.idx is not None else None, batch.target_dims)
        return Batch(x, batch.y, batch.idx, batch.target_dims), (partner, lam)

    def _member_losses(self, x: torch.Tensor, batch: Batch, mix: tuple[Batch, torch.Tensor] | None,
                       params: Any, members: slice | None = None) -> tuple[torch.Tensor, torch.Tensor, Batch]:
        """Per-member losses and logits of ``members`` (all: ``None``) under the configured precision."""
        kw = {} if members is None else {"members": members}
        # the FLOP-counted first step runs eagerly: dynamo does not trace under a dispatch mode
        # (and would then skip the frame for good)
        forward = self._forward if self.flops_per_step is not None else self.model
        with autocast(self.device, self.config.precision):
            logits = forward(x, per_member=batch.per_member, params=params, **kw)
        out = logits.float()
        if mix is not None:
            partner, lam = mix
            return lam * self.loss_fn(out, batch) + (1 - lam) * self.loss_fn(out, partner), logits, batch
        batch = self._targets(batch)
        return self.loss_fn(out, batch), logits, batch

    def _losses(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, Batch]:
        """Per-member training losses ``(M,)`` (with augmentation, mixup, penalties) and the logits."""
        batch, mix = self._inputs(batch)
        params = self.layout.forward_params()
        losses, logits, batch = self._member_losses(batch.x, batch, mix, params)
        if self.config.penalties.active:
            losses = losses + member_penalties(self.model, self.config.penalties, params)
        return losses, logits, batch

    @torch.no_grad()
    def _decay(self) -> None:
        """Decoupled weight decay: ``w <- w (1 - lr * weight_decay)`` with each group's current rate."""
        for group in self.optimizer.param_groups:
            if not group.get("ek_decay", True):
                continue
            for p in group["params"]:
                p.mul_(1.0 - group["lr"] * self.config.weight_decay)

    def _diverged(self, losses: torch.Tensor, lr: float, first: int = 0) -> None:
        bad = [first + i for i, v in enumerate(losses.detach().tolist()) if not torch.isfinite(torch.tensor(v))]
        raise NonFiniteLossError(
            f"{self.stage}: the loss became non-finite at epoch {self.epoch + 1}, iteration {self.step + 1} "
            f"(member(s) {bad}, lr={lr:.3g}){self._kept()}; lower the learning rate or set train.grad_clip"
        )

    def _kept(self) -> str:
        """Where the last good state is, in words (a checkpoint that exists, or that none does yet)."""
        if self.run is None:
            return "; nothing was checkpointed (no run directory)"
        path = self.run.checkpoint_path(self.stage)
        if os.path.exists(path):
            return f"; the last good checkpoint is kept in {path}"
        return "; no checkpoint of this stage exists yet"
