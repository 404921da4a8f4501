"""Laplace: a trained ensemble whose members' final layers get a Gaussian posterior (a Laplace ensemble).

Every member ``m`` keeps its network and gets the last-layer posterior
``N(θ̂_m, (H_m + δ_m I)^{-1})`` (:class:`~ensemblekit.laplace.posterior.LastLayerPosterior`;
Kristiadi, Hein & Hennig, "Being Bayesian, Even Just a Bit, Fixes Overconfidence in ReLU
Networks", ICML 2020; Daxberger et al., "Laplace Redux — Effortless Bayesian Deep Learning",
NeurIPS 2021). With M > 1 members the predictive is the uniform mixture of the members'
Laplace predictives (Eschenhagen et al., "Mixtures of Laplace Approximations for Improved
Post-Hoc Uncertainty in Deep Learning", 2021). Two predictives:

- ``probit`` (default): the linearised (GLM) predictive of each member (Immer, Korzepa &
  Bauer, AISTATS 2021) in closed form, MacKay's probit approximation for classification and
  ``σ² + v`` for regression (:mod:`ensemblekit.laplace.probit`); M members.
- ``mc``: ``samples`` draws of the final layer per member, each draw one member of the
  predictor (M · S members, member m's draws contiguous), all computed from one network forward
  per member; the draws are fixed when the predictor is built (the same inputs give the same
  outputs, and a loaded file redraws the same ones).

:func:`fit_laplace` fits it after training; the file (``ensemblekit.laplace/1``) holds the
ensemble's tensors and metadata plus every posterior's tensors (keys ``laplace.<m>.<name>``)
and small state, and loading runs no code.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..data.dataset import Split
from ..ensemble import Ensemble
from ..errors import ConfigError, DataError
from ..predictors import EnsembleModule, register_predictor
from ..serialization import load_tensors, save_tensors
from .curvature import STRUCTURES, with_bias
from .fitting import forward_features, head_of, member_posterior, validation_nll
from .posterior import DEFAULT_GRID, LastLayerPosterior, check_prior_precision, select_prior
from .probit import ProbitLinear

__all__ = ["Laplace", "fit_laplace", "probit_members", "LAPLACE_FORMAT", "PREDICTIVES", "PRIORS"]

LAPLACE_FORMAT = "ensemblekit.laplace/1"
PREDICTIVES = ("probit", "mc")
PRIORS = ("marglik", "val")
_PREFIX = "laplace"


def _check_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"laplace {name} must be an integer >= 1, got {value!r}")
    return value


def probit_members(ensemble: Any, posteriors: Sequence[LastLayerPosterior]) -> list[nn.Module]:
    """Copies of the members (eval mode, on the ensemble's device) whose final ``nn.Linear`` is a
    :class:`~ensemblekit.laplace.probit.ProbitLinear` at each posterior's current prior precision."""
    out = []
    d = int(ensemble.readout.num_outputs) if ensemble.readout.is_regression else 0
    for m, post in enumerate(posteriors):
        net = ensemble.member(m).eval()
        parent, name, linear = head_of(net)
        head = ProbitLinear(linear, *post.variance_factors(), regression_outputs=d).eval()
        if parent is None:
            net = head
        else:
            setattr(parent, name, head)
        out.append(net)
    return out


@register_predictor
class Laplace:
    """A stacked ensemble of M trained members with one last-layer posterior each.

    Args:
        ensemble: the trained :class:`~ensemblekit.ensemble.Ensemble`.
        posteriors: one :class:`~ensemblekit.laplace.posterior.LastLayerPosterior` per member
            (:func:`fit_laplace` makes them).
        predictive: ``probit`` | ``mc``. samples: S, draws per member for ``mc``.
        seed: the draws of member m come from a CPU generator started at ``seed + m``.

    The posteriors stay on CPU (float64); the members and their variance factors (float32)
    live on the ensemble's device.
    """

    file_format = LAPLACE_FORMAT

    def __init__(self, ensemble: Any, posteriors: Sequence[LastLayerPosterior], *, predictive: str = "probit",
                 samples: int = 10, seed: int = 0) -> None:
        if len(posteriors) != ensemble.num_members:
            raise ConfigError(f"laplace needs one posterior per member: {len(posteriors)} for {ensemble.num_members} members")
        if predictive not in PREDICTIVES:
            raise ConfigError(f"laplace predictive must be one of {', '.join(PREDICTIVES)}, got {predictive!r}")
        self.ensemble = ensemble
        self.posteriors = list(posteriors)
        self.predictive = predictive
        self.samples = _check_int(samples, "samples")
        self.seed = int(seed)
        self.training = False
        self._cache: tuple[Any, Any] | None = None
        info = ensemble.members_info
        self.members_info = ([{"member": m, **info[m]} for m in range(len(info))] if predictive == "probit" else
                             [{"member": m, "sample": s, **info[m]} for m in range(len(info)) for s in range(self.samples)])

    @property
    def num_members(self) -> int:
        """M (probit) or M · S (mc)."""
        return self.ensemble.num_members * (self.samples if self.predictive == "mc" else 1)

    def __len__(self) -> int:
        return self.num_members

    @property
    def device(self) -> torch.device:
        return self.ensemble.device

    def num_parameters(self) -> int:
        """The networks' parameters plus the numbers the posteriors' curvature factors store
        (``H``, ``G`` and ``A``, or ``h``; their means are the networks' own final layers)."""
        return int(self.ensemble.num_parameters()) + sum(p.num_stored() for p in self.posteriors)

    def train(self, mode: bool = True) -> "Laplace":
        self.training = mode
        return self

    def eval(self) -> "Laplace":
        return self.train(False)

    # ----------------------------------------------------------------- forward
    def _built(self) -> Any:
        """The probit members, or the plain members with their heads and weight draws (mc); cached
        until a posterior's prior precision changes."""
        key = (self.predictive, tuple(p.prior_precision for p in self.posteriors))
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        if self.predictive == "probit":
            built: Any = probit_members(self.ensemble, self.posteriors)
        else:
            built = []
            for m, post in enumerate(self.posteriors):
                net = self.ensemble.member(m).eval()
                gen = torch.Generator().manual_seed((self.seed + m) % 2**63)
                draws = post.sample(self.samples, gen).to(self.device, torch.float32)
                built.append((net, head_of(net)[2], post, draws))
        self._cache = (key, built)
        return built

    def _mc_member(self, parts: Any, x: torch.Tensor, per_member: bool) -> torch.Tensor:
        net, linear, post, draws = parts
        s = self.samples
        xs = x.reshape(-1, *x.shape[2:]) if per_member else x  # (S, B, ...) -> (S B, ...): still one forward
        phi, z = forward_features(net, linear, xs)
        phi_t = with_bias(phi, post.bias, draws.dtype)
        if per_member:
            f = torch.einsum("sbj,skj->sbk", phi_t.reshape(s, -1, phi_t.shape[-1]), draws)
            z = z.reshape(s, -1, z.shape[-1])
        else:
            f = torch.einsum("bj,skj->sbk", phi_t, draws)
            z = z.expand(s, *z.shape)
        k = post.num_outputs
        return torch.cat([f.to(z.dtype), z[..., k:]], dim=-1) if self.ensemble.readout.is_regression else f.to(z.dtype)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, per_member: bool = False, params: Any = None) -> torch.Tensor:
        """Outputs ``(M', B, K)``; ``x`` is ``(B, ...)`` (standardised inputs), or ``(M', B, ...)`` with ``per_member``."""
        built = self._built()
        if self.predictive == "probit":
            return torch.stack([net(x[m] if per_member else x) for m, net in enumerate(built)])
        s = self.samples
        return torch.cat([self._mc_member(parts, x[m * s:(m + 1) * s] if per_member else x, per_member)
                          for m, parts in enumerate(built)])

    forward = __call__

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Inference outputs ``(M', B, K)``: probit-adjusted logits / regression outputs, or the weight draws' outputs."""
        return self(x)

    def predict_proba(self, x: torch.Tensor | Split, batch_size: int = 1024) -> torch.Tensor:
        from ..evaluation.forward import predictive

        return predictive(self, x, batch_size=batch_size, cpu=False).probs

    def predict(self, x: torch.Tensor | Split, batch_size: int = 1024) -> torch.Tensor:
        return self.predict_proba(x, batch_size).mean(0)

    def export_module(self, with_members: bool = False) -> nn.Module:
        """The probit predictive as an :class:`~ensemblekit.predictors.EnsembleModule` on CPU whose members
        end in :class:`~ensemblekit.laplace.probit.ProbitLinear` (the same modules :meth:`logits` runs).

        Raises:
            ConfigError: the ``mc`` predictive (random draws are not a graph).
        """
        if self.predictive != "probit":
            raise ConfigError("MC sampling cannot be exported; use predictive: probit or `ensemblekit predict`")
        members = probit_members(self.ensemble.to("cpu"), self.posteriors)
        return EnsembleModule(members, with_members=with_members, regression=self.readout.export_constants()).eval()

    # ----------------------------------------------------------------- file
    def save(self, path: str) -> None:
        """The ensemble's tensors and metadata, every posterior's tensors and state, and the predictive."""
        tensors = dict(self.ensemble.state_tensors())
        states = []
        for m, post in enumerate(self.posteriors):
            ts, small = post.state()
            tensors.update({f"{_PREFIX}.{m}.{k}": t for k, t in ts.items()})
            states.append(small)
        meta = {"format": LAPLACE_FORMAT, "structure": self.posteriors[0].structure, "predictive": self.predictive,
                "samples": self.samples, "seed": self.seed, "posteriors": states, "ensemble": self.ensemble.metadata()}
        save_tensors(path, tensors, meta)

    @classmethod
    def load(cls, path: str, factory: Callable[[], nn.Module] | Sequence[Callable[[], nn.Module]] | None = None,
             device: str | torch.device = "cpu", trust_factory: bool = False) -> "Laplace":
        """Read a file :meth:`save` wrote (see :meth:`ensemblekit.ensemble.Ensemble.load` for ``factory``).

        Raises:
            DataError: not a Laplace file, or its posteriors are malformed.
        """
        tensors, meta = load_tensors(path, device="cpu")
        if not isinstance(meta, dict) or meta.get("format") != LAPLACE_FORMAT or not isinstance(meta.get("posteriors"), list):
            raise DataError(f"{path}: not an ensemblekit Laplace file")
        ens = Ensemble.from_saved(path, tensors, meta.get("ensemble"), factory, "cpu", trust_factory)
        if len(meta["posteriors"]) != ens.num_members:
            raise DataError(f"{path}: {len(meta['posteriors'])} posteriors for {ens.num_members} members")
        posteriors = []
        for m, small in enumerate(meta["posteriors"]):
            prefix = f"{_PREFIX}.{m}."
            posteriors.append(LastLayerPosterior.from_state({k[len(prefix):]: t for k, t in tensors.items() if k.startswith(prefix)}, small))
        try:
            out = cls(ens, posteriors, predictive=str(meta.get("predictive", "probit")), samples=int(meta.get("samples", 10)),
                      seed=int(meta.get("seed", 0)))
        except (ConfigError, TypeError, ValueError) as exc:
            raise DataError(f"{path}: malformed Laplace metadata ({exc})") from None
        return out.to(device) if torch.device(device) != torch.device("cpu") else out

    def to(self, device: torch.device | str) -> "Laplace":
        """A copy whose ensemble is on ``device`` (the posteriors are shared; they stay on CPU)."""
        return Laplace(self.ensemble.to(device), self.posteriors, predictive=self.predictive, samples=self.samples, seed=self.seed)

    @property
    def readout(self) -> Any:
        """How the outputs read: the wrapped ensemble's readout (saved in its metadata)."""
        return self.ensemble.readout

    @readout.setter
    def readout(self, value: Any) -> None:
        self.ensemble.readout = value

    def __repr__(self) -> str:
        extra = f", {self.samples} samples" if self.predictive == "mc" else ""
        return f"Laplace({self.ensemble.num_members} members, {self.posteriors[0].structure}, {self.predictive}{extra})"


def fit_laplace(ensemble: Any, split: Split, *, structure: str = "kfac", prior: str | float = "marglik", val: Split | None = None,
                batch_size: int = 512, predictive: str = "probit", samples: int = 10, seed: int = 0,
                grid: Sequence[float] = DEFAULT_GRID) -> Laplace:
    """Fit a last-layer Laplace approximation to every member of a trained ensemble.

    Args:
        ensemble: a trained :class:`~ensemblekit.ensemble.Ensemble` (classifier, or a regression
            ensemble with a learned-variance head).
        split: the data the curvature sums over (usually the training split; no targets are used).
        structure: ``full`` | ``kfac`` | ``diag`` (:mod:`ensemblekit.laplace.curvature`).
        prior: ``marglik`` (each member's ``δ`` maximises its evidence), ``val`` (one ``δ`` for
            all members, the grid point with the lowest NLL of the pooled probit predictive on
            ``val``) or a number (a fixed ``δ``).
        val: the validation split, for ``prior="val"``.
        batch_size: examples per forward pass.
        predictive, samples, seed: of the :class:`Laplace` returned.
        grid: the prior precisions tried.

    Raises:
        ConfigError: bad options, a model without a final linear layer, a means-only regression head.
        DataError: empty splits, non-finite curvature.
    """
    if structure not in STRUCTURES:
        raise ConfigError(f"laplace structure must be one of {', '.join(STRUCTURES)}, got {structure!r}")
    if isinstance(prior, str) and prior not in PRIORS:
        raise ConfigError(f"laplace prior must be one of {', '.join(PRIORS)} or a number > 0, got {prior!r}")
    fixed = None if isinstance(prior, str) else check_prior_precision(prior)
    if prior == "val" and val is None:
        raise ConfigError("laplace prior: val needs a validation split (val=...)")
    if predictive not in PREDICTIVES:
        raise ConfigError(f"laplace predictive must be one of {', '.join(PREDICTIVES)}, got {predictive!r}")
    _check_int(samples, "samples")
    _check_int(batch_size, "batch_size")
    if not callable(getattr(ensemble, "member", None)):
        raise ConfigError(f"laplace wraps a stacked Ensemble, got {type(ensemble).__name__}")
    nets = [ensemble.member(m).eval() for m in range(ensemble.num_members)]
    posteriors = [member_posterior(ensemble, net, split, structure, batch_size) for net in nets]
    if fixed is not None:
        delta = [fixed] * len(posteriors)
    elif prior == "marglik":
        delta = [p.fit_prior("marglik", grid) for p in posteriors]
    else:
        delta = [select_prior(validation_nll(ensemble, nets, posteriors, val, batch_size), grid)] * len(posteriors)  # type: ignore[arg-type]
    for post, d in zip(posteriors, delta):
        post.prior_precision = d
    return Laplace(ensemble, posteriors, predictive=predictive, samples=samples, seed=seed)
