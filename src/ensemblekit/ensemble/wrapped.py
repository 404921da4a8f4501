"""A predictor kind made of a trained stacked ensemble plus something fitted to it.

DDU's feature densities and a Prior Network's Dirichlet reading keep the ensemble's forward as
it is and add their own per-example scores (``example_scores``). :class:`WrappedEnsemble` is
the surface they share with the :class:`~ensemblekit.ensemble.Ensemble` they wrap: members,
device, train/eval mode, logits, probabilities, the export (the ensemble's classifier) and the
readout; a kind adds its own file (``save``/``load``), ``to`` and scores.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..data.dataset import Split
from .container import Ensemble

__all__ = ["WrappedEnsemble"]


class WrappedEnsemble:
    """The forward, mode and export of the wrapped ``ensemble``; subclasses add what they fitted."""

    def __init__(self, ensemble: Ensemble) -> None:
        self.ensemble = ensemble
        self.training = False
        self.members_info = [dict(m) for m in ensemble.members_info]

    @property
    def num_members(self) -> int:
        return self.ensemble.num_members

    def __len__(self) -> int:
        return self.num_members

    @property
    def device(self) -> torch.device:
        return self.ensemble.device

    def num_parameters(self) -> int:
        return self.ensemble.num_parameters()

    def train(self, mode: bool = True) -> "WrappedEnsemble":
        self.training = mode
        self.ensemble.train(mode)
        return self

    def eval(self) -> "WrappedEnsemble":
        return self.train(False)

    def __call__(self, x: torch.Tensor, per_member: bool = False, params: Any = None) -> torch.Tensor:
        """The ensemble's logits ``(M, B, C)``."""
        return self.ensemble(x, per_member, params)

    forward = __call__

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Inference logits ``(M, B, C)``: the ensemble's, unchanged."""
        return self.ensemble.logits(x)

    def predict_proba(self, x: torch.Tensor | Split, batch_size: int = 1024) -> torch.Tensor:
        """Per-member probabilities ``(M, N, C)``."""
        return self.ensemble.predict_proba(x, batch_size)

    def predict(self, x: torch.Tensor | Split, batch_size: int = 1024) -> torch.Tensor:
        return self.predict_proba(x, batch_size).mean(0)

    def export_module(self, with_members: bool = False) -> nn.Module:
        """The ensemble's export: the graph gives the probabilities; the kind's own scores are
        computed by ensemblekit (``example_scores``)."""
        return self.ensemble.export_module(with_members)

    @property
    def readout(self) -> Any:
        """How the outputs read: the wrapped ensemble's readout."""
        return self.ensemble.readout

    @readout.setter
    def readout(self, value: Any) -> None:
        self.ensemble.readout = value
