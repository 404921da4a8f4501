"""MC-dropout: one network with dropout kept on at test time; M stochastic passes are the members.

Gal & Ghahramani, "Dropout as a Bayesian Approximation: Representing Model Uncertainty in
Deep Learning", ICML 2016. The network trains as usual; at prediction every ``nn.Dropout``
stays in training mode and pass m draws its masks under ``manual_seed(seed + m)``, so the
M members are fixed (the same inputs give the same predictions, and ``p = 0`` gives M
identical members, tested). The model wrapper ``head_dropout: p`` adds dropout before the
head of a model that has none.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..data.dataset import Split
from ..ensemble import Ensemble
from ..errors import ConfigError, DataError
from ..models.registry import register_wrapper
from ..predictors import register_predictor
from ..serialization import load_tensors, save_tensors

__all__ = ["MCDropout", "add_head_dropout", "MC_FORMAT"]

MC_FORMAT = "ensemblekit.mcdropout/1"
_DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout)


def _check_p(value: Any) -> float:
    value = 0.0 if value is None else value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ConfigError(f"head_dropout must be a probability in [0, 1), got {value!r}")
    return float(value)


@register_wrapper("head_dropout", check=_check_p, order=15)
def add_head_dropout(model: nn.Module, p: float) -> nn.Module:
    """Put ``nn.Dropout(p)`` before the last Linear layer (in place)."""
    from .shared import find_layers

    found = find_layers(model, (nn.Linear,))
    if not found:
        raise ConfigError(f"head_dropout needs a model with a Linear head, got {type(model).__name__}")
    parent, name, head = found[-1]
    setattr(parent, name, nn.Sequential(nn.Dropout(p), head))
    return model


@register_predictor
class MCDropout:
    """The predictor: ``passes`` stochastic forward passes of one trained network.

    Args:
        ensemble: a one-member :class:`~ensemblekit.ensemble.Ensemble` (the trained network).
        passes: M (>= 1). seed: pass m uses ``manual_seed(seed + m)``.
    """

    file_format = MC_FORMAT

    def __init__(self, ensemble: Any, passes: int, seed: int = 0) -> None:
        if ensemble.num_members != 1:
            raise ConfigError(f"MC-dropout wraps one trained network, got {ensemble.num_members}")
        if not isinstance(passes, int) or passes < 1:
            raise ConfigError(f"mc_dropout passes must be an integer >= 1, got {passes!r}")
        self.ensemble = ensemble
        self.network = ensemble.member(0)
        self.passes = passes
        self.seed = int(seed)
        self.training = False
        if not any(isinstance(m, _DROPOUTS) for m in self.network.modules()):
            raise ConfigError("mc_dropout needs dropout in the model (a dropout option of the model, or model: {head_dropout: p})")
        self.members_info = [{"pass": m, **ensemble.members_info[0]} for m in range(passes)]

    @property
    def num_members(self) -> int:
        return self.passes

    def __len__(self) -> int:
        return self.passes

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.network.parameters())

    def train(self, mode: bool = True) -> "MCDropout":
        self.training = mode
        return self

    def eval(self) -> "MCDropout":
        return self.train(False)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, per_member: bool = False, params: Any = None) -> torch.Tensor:
        """Logits ``(M, B, C)`` of the M passes (dropout on, everything else in eval mode)."""
        net = self.network.eval()
        for m in net.modules():
            if isinstance(m, _DROPOUTS):
                m.train()
        outs = []
        devices = [self.device] if self.device.type == "cuda" else []
        for p in range(self.passes):
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(self.seed + p)
                outs.append(net(x[p] if per_member else x))
        return torch.stack(outs)

    forward = __call__

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Inference logits ``(passes, B, C)``: the seeded dropout passes."""
        return self(x)

    def predict_proba(self, x: torch.Tensor | Split, batch_size: int = 1024) -> torch.Tensor:
        from ..evaluation.forward import predictive

        return predictive(self, x, batch_size=batch_size, cpu=False).probs

    def predict(self, x: torch.Tensor | Split, batch_size: int = 1024) -> torch.Tensor:
        return self.predict_proba(x, batch_size).mean(0)

    def export_module(self, with_members: bool = False) -> nn.Module:
        """Refused: the members are random dropout passes, which no static graph reproduces.

        Raises:
            ConfigError: always.
        """
        raise ConfigError("MC-dropout's members are random dropout passes, which a static graph cannot reproduce; "
                          "export the network without dropout or use `ensemblekit predict`")

    def save(self, path: str) -> None:
        """The network (as a one-member ensemble file's tensors and metadata) plus the passes and seed."""
        meta = {"format": MC_FORMAT, "passes": self.passes, "seed": self.seed, "ensemble": self.ensemble.metadata()}
        save_tensors(path, self.ensemble.state_tensors(), meta)

    @classmethod
    def load(cls, path: str, factory: Callable[[], nn.Module] | Sequence[Callable[[], nn.Module]] | None = None,
             device: str | torch.device = "cpu", trust_factory: bool = False) -> "MCDropout":
        tensors, meta = load_tensors(path, device=device)
        if not isinstance(meta, dict) or meta.get("format") != MC_FORMAT:
            raise DataError(f"{path}: not an ensemblekit MC-dropout file")
        ens = Ensemble.from_saved(path, tensors, meta.get("ensemble"), factory, device, trust_factory)
        return cls(ens, int(meta["passes"]), int(meta.get("seed", 0)))  # the readout is the network's (its metadata)

    def to(self, device: torch.device | str) -> "MCDropout":
        return MCDropout(self.ensemble.to(device), self.passes, self.seed)

    @property
    def readout(self) -> Any:
        """How the outputs read: the wrapped network's readout (saved in its metadata)."""
        return self.ensemble.readout

    @readout.setter
    def readout(self, value: Any) -> None:
        self.ensemble.readout = value

    def __repr__(self) -> str:
        return f"MCDropout({self.passes} passes)"

