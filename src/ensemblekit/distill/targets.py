"""What the student learns from: the teacher's predictions, computed once, and the inputs it sees.

:class:`TeacherTargets` holds the teacher members' predictions on every training input, in the
units the student trains in: probabilities ``(K, N, C)`` for a classifier, means and variances
``(K, N, D)`` for a regression teacher (standardised like the student's targets). The loss looks
them up by the examples' indices (:attr:`ensemblekit.data.batching.Batch.idx`), so a student epoch
costs a plain epoch plus a gather. Where the inputs change every epoch (``train.augment``,
``train.mixup``) the teacher is run on the batch the student sees instead (:class:`StreamedTeacher`):
one teacher forward per input the student sees, never a member recomputed for anything else.

:func:`auxiliary_inputs` makes extra inputs off the training points (Hinton et al. 2015 distil on a
transfer set; Malinin et al. 2020 add perturbed inputs so that the student learns where the members
disagree): random training examples, optionally augmented and mixed pairwise (mixup, Zhang et al.
2018), fixed by a seed so that their teacher predictions are computed once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from ..data.batching import Batch
from ..data.dataset import Split
from ..errors import DataError
from ..evaluation.forward import predictive
from ..metrics.head_outputs import split_gaussian
from .losses import end2_loss, gaussian_kl, kd_loss

__all__ = ["TeacherTargets", "StreamedTeacher", "teacher_targets", "auxiliary_inputs", "distill_loss_fn", "check_aux_specs", "LOSSES"]

LOSSES = ("kd", "end2", "hydra")
"""``kd``: the pooled predictive; ``end2``: a Dirichlet over the members (classification);
``hydra``: head m learns member m."""


@dataclass(frozen=True)
class TeacherTargets:
    """The teacher members' predictions on the N training inputs (CPU, float32).

    Attributes:
        probs: ``(K, N, C)`` for a classifier, else ``None``.
        mean, var: ``(K, N)`` or ``(K, N, D)`` for a regression teacher (the student's units), else ``None``.
    """

    probs: torch.Tensor | None = None
    mean: torch.Tensor | None = None
    var: torch.Tensor | None = None

    @property
    def num_members(self) -> int:
        return int((self.probs if self.probs is not None else self.mean).shape[0])  # type: ignore[union-attr]

    def __len__(self) -> int:
        return int((self.probs if self.probs is not None else self.mean).shape[1])  # type: ignore[union-attr]

    def cat(self, other: "TeacherTargets") -> "TeacherTargets":
        """These targets followed by ``other``'s (the auxiliary inputs after the training split)."""
        join = lambda a, b: None if a is None else torch.cat([a, b], dim=1)  # noqa: E731
        return TeacherTargets(join(self.probs, other.probs), join(self.mean, other.mean), join(self.var, other.var))

    def classes(self) -> torch.Tensor:
        """The pooled teacher's class per input ``(N,)`` (the labels of auxiliary inputs)."""
        return self.probs.mean(0).argmax(-1)  # type: ignore[union-attr]


@torch.no_grad()
def teacher_targets(teacher: Any, x: torch.Tensor | Split, scaling: Any = None, batch_size: int = 1024) -> TeacherTargets:
    """The teacher's member predictions on ``x`` (in the data's units): probabilities, or, for a
    regression teacher, means and variances mapped into the student's standardised units by
    ``scaling`` (its target mean and standard deviation; ``None``: the data's units)."""
    pd = predictive(teacher, x, batch_size=batch_size)
    if pd.kind == "categorical":
        return TeacherTargets(probs=pd.probs.float())
    mean, var = pd.mean.float(), pd.var.float()  # (K, N) or (K, N, D): the shapes of the student's split_gaussian
    if scaling is not None and scaling.y_mean is not None:
        mu, sd = scaling.y_mean.float(), scaling.y_std.float()
        mean, var = (mean - mu) / sd, var / sd.square()
    return TeacherTargets(mean=mean, var=var)


class StreamedTeacher:
    """The teacher run on the inputs of each step (augmented or mixed ones): member probabilities
    ``(K, *lead, C)`` for inputs ``(*lead, *example)``, in eval mode, without gradients."""

    def __init__(self, teacher: Any, example_ndim: int) -> None:
        self.teacher, self.example_ndim = teacher, int(example_ndim)
        self.teacher.eval()
        self._placed: dict[torch.device, Any] = {}

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.device not in self._placed:
            self._placed[x.device] = self.teacher if self.teacher.device == x.device else self.teacher.to(x.device).eval()
        lead = x.shape[: x.dim() - self.example_ndim]
        flat = x.reshape(-1, *x.shape[x.dim() - self.example_ndim:])
        probs = torch.softmax(self._placed[x.device].logits(flat).float(), dim=-1)  # (K, prod(lead), C)
        return probs.reshape(probs.shape[0], *lead, probs.shape[-1])


def _gather(t: torch.Tensor, idx: torch.Tensor, per_head: bool) -> torch.Tensor:
    """``t[:, idx]`` ``(K, *idx.shape, ...)``; ``per_head``: member m's rows for head m, ``(M, B, ...)``."""
    out = t[:, idx]
    if not per_head:
        return out
    if idx.dim() == 2:  # (K, M, B, ...) with K = M: the diagonal
        return out[torch.arange(out.shape[0]), torch.arange(out.shape[0])]
    return out


def distill_loss_fn(loss: str, targets: TeacherTargets | None, *, temperature: float = 1.0, smoothing: float = 1e-4,
                    label_weight: float = 0.0, label_loss: Callable[[torch.Tensor, Batch], torch.Tensor] | None = None,
                    stream: StreamedTeacher | None = None, min_var: float = 1e-6, end2: str = "split",
                    precision_weight: float = 0.01) -> Callable[[torch.Tensor, Batch], torch.Tensor]:
    """A Trainer ``loss_fn(outputs (M, B, K), batch) -> (M,)`` that distils ``targets`` (or ``stream``).

    ``(1 - label_weight)`` times the distillation loss plus ``label_weight`` times ``label_loss``
    (the task's own loss on the labels); ``end2``, ``precision_weight``: :func:`~ensemblekit.distill.losses.end2_loss`. Cached targets are looked up by ``batch.idx`` (one copy
    per device); streamed ones are computed on ``batch.x``.

    Raises:
        DataError: cached targets and a batch without example indices (a DataLoader split).
    """
    on_device: dict[torch.device, TeacherTargets] = {}
    per_head = loss == "hydra"

    def lookup(out: torch.Tensor, batch: Batch) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        if stream is not None:
            return stream(batch.x), None, None
        if batch.idx is None:
            raise DataError("distillation looks up the teacher's predictions by example index; use an in-memory training split")
        if out.device not in on_device:
            move = lambda t: None if t is None else t.to(out.device)  # noqa: E731
            on_device[out.device] = TeacherTargets(move(targets.probs), move(targets.mean), move(targets.var))  # type: ignore[union-attr]
        t, idx = on_device[out.device], batch.idx.to(out.device)
        pick = lambda v: None if v is None else _gather(v, idx, per_head)  # noqa: E731
        return pick(t.probs), pick(t.mean), pick(t.var)

    def loss_fn(out: torch.Tensor, batch: Batch) -> torch.Tensor:
        probs, mean, var = lookup(out, batch)
        if probs is not None:
            if loss == "end2":
                value = end2_loss(out, probs, temperature, smoothing, end2, precision_weight)
            else:
                value = kd_loss(out, probs if per_head else probs.mean(0), temperature)
        else:
            s_mean, s_var = split_gaussian(out, min_var)
            if not per_head:  # the mixture's mean and total variance
                pooled = mean.mean(0)  # type: ignore[union-attr]
                var = (var + mean.square()).mean(0) - pooled.square()  # type: ignore[union-attr, operator]
                mean = pooled
            value = gaussian_kl(s_mean, s_var, mean, var.clamp_min(min_var))  # type: ignore[arg-type, union-attr]
        if label_weight > 0 and label_loss is not None:
            value = (1 - label_weight) * value + label_weight * label_loss(out, batch)
        return value

    return loss_fn


def auxiliary_inputs(x: torch.Tensor, size: float, *, seed: int, mixup: float = 0.0, augment: Any = None, noise: float = 0.0) -> torch.Tensor:
    """``round(size · N)`` inputs made from random training inputs ``x`` ``(N, ...)``: each one a
    training input, passed through ``augment`` (a built augmentation, ``None``: none), with
    ``mixup`` = a > 0 mixed with another random one as ``λ x + (1 - λ) x'``, ``λ ~ Beta(a, a)``,
    and with ``noise`` = s > 0 perturbed by Gaussian noise of s times each input feature's
    standard deviation over the training split. A pure function of ``seed``."""
    n = max(1, int(round(float(size) * x.shape[0])))
    g = torch.Generator().manual_seed(int(seed))
    out = x[torch.randint(0, x.shape[0], (n,), generator=g)].clone()
    if augment is not None:
        out = augment(out, g)
    if mixup > 0:
        partner = x[torch.randint(0, x.shape[0], (n,), generator=g)]
        if augment is not None:
            partner = augment(partner, g)
        lam = torch.from_numpy(np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,), generator=g))).beta(mixup, mixup, size=n))
        lam = lam.to(out.dtype).reshape(n, *([1] * (out.dim() - 1)))
        out = lam * out + (1 - lam) * partner
    if noise > 0:
        std = x.float().std(0, keepdim=True).to(out.dtype)
        out = out + float(noise) * std * torch.randn(out.shape, generator=g, dtype=out.dtype)
    return out


def check_aux_specs(spec: Mapping[str, Any] | None, example_shape: Sequence[int]) -> Any:
    """The built augmentation of an ``aux`` spec (``None`` when it augments nothing)."""
    from ..data.augment import build_augment

    if not spec or not spec.get("augment"):
        return None
    return build_augment(spec["augment"], example_shape)



