"""The predictive distribution every metric reads: what a predictor says about a set of examples.

A predictor's M members each give a distribution over the target of every example. For
classification that is a categorical distribution, :class:`Categorical`: the members'
probabilities and logits ``(M, N, C)``. The object carries the operations the metrics and
the evaluation need (pool the members, take a prefix of them, score each example's
uncertainty) so that they ask the object instead of reaching into its tensors' layout.

:func:`ensemblekit.evaluation.forward.predictive` produces it (one pass over members,
batches and test-time transforms); this module only holds the type, so that the metrics stay
pure functions of (predictive, targets).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Sequence

import torch

__all__ = ["Categorical"]


@dataclass(frozen=True)
class Categorical:
    """M members' categorical predictive distributions over N examples.

    Attributes:
        probs: members' probabilities ``(M, N, C)`` (float32, CPU); with test-time
            augmentation the mean over the transformed inputs.
        logits: members' logits ``(M, N, C)``, averaged the same way (the softmax of the mean
            logits is not ``probs`` under TTA: each is the mean of its own quantity).

    Example:
        >>> pd = predictive(method.ensemble_, data.test)
        >>> pd.pooled().argmax(-1)              # the ensemble's classes (N,)
        >>> pd.scores(["mi", "entropy"])["mi"]  # per-example mutual information (N,)
    """

    probs: torch.Tensor
    logits: torch.Tensor
    kind: ClassVar[str] = "categorical"

    @property
    def num_members(self) -> int:
        return int(self.probs.shape[0])

    @property
    def num_examples(self) -> int:
        return int(self.probs.shape[1])

    @property
    def num_classes(self) -> int:
        return int(self.probs.shape[2])

    def pooled(self) -> torch.Tensor:
        """The ensemble's distribution ``(N, C)``: the mean of the members' probabilities."""
        return self.probs.mean(0)

    def prefix(self, k: int) -> "Categorical":
        """The predictive of the first ``k`` members."""
        return Categorical(self.probs[:k], self.logits[:k])

    def members(self, indices: Sequence[int]) -> "Categorical":
        """The predictive of the chosen members, in the given order."""
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        return Categorical(self.probs[idx], self.logits[idx])

    def correct(self, y: torch.Tensor) -> torch.Tensor:
        """Whether the ensemble's class is the label, per example ``(N,)`` bool."""
        return self.pooled().argmax(-1) == y

    def scores(self, names: Sequence[str]) -> dict[str, torch.Tensor]:
        """Per-example uncertainty scores ``(N,)`` (higher: more uncertain), by name: see
        :func:`ensemblekit.metrics.ood.uncertainty_scores`."""
        from .ood import uncertainty_scores

        return uncertainty_scores(self.probs, self.logits, names)

    @staticmethod
    def mean_of(parts: Sequence["Categorical"]) -> "Categorical":
        """The mean of predictives of the same examples (test-time augmentation), summed in order."""
        probs, logits = parts[0].probs, parts[0].logits
        for p in parts[1:]:
            probs, logits = probs + p.probs, logits + p.logits
        n = len(parts)
        return Categorical(probs / n, logits / n) if n > 1 else parts[0]
