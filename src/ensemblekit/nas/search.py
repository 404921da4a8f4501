"""First-order DARTS search and EdgeNES's hypernetwork training on a supernet.

Both are bilevel loops (a weight step on one half of the training split, an architecture
step on the other), which the one-objective :class:`~ensemblekit.training.engine.Trainer`
cannot express, so they have their own short loop here with the engine's non-finite-loss
check. A finished stage is saved atomically (safetensors + JSON) in the run directory and
skipped on resume; a stage interrupted half-way restarts from its beginning.

Paper: Liu, Simonyan & Yang, "DARTS", ICLR 2019 (first-order variant); Babkin & Bakhteev
(MIPT 2024; docs/methods.md, edgenes) for the hypernetwork objective.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from pydantic import Field

from ..data.dataset import Data
from ..errors import ConfigError, NonFiniteLossError
from ..serialization import load_tensors, read_json, save_tensors, write_json
from ..schema import StrictModel
from ..training.flops import flop_counter
from .genotype import Genotype, derive_genotype
from .hypernet import ArchHypernet
from .relax import gumbel_softmax, relaxed_topk, segment_softmax, soft_common_edges
from .supernet import SearchNetwork
from .genotype import node_slices

__all__ = ["SearchConfig", "HyperConfig", "SearchResult", "HypernetResult", "darts_search", "train_hypernet", "split_halves", "linear_anneal"]


class SearchConfig(StrictModel):
    """The supernet and the DARTS search.

    Args:
        channels: first-cell channels of the supernet (even, >= 2; default 4).
        layers: cells (>= 1; default 2: one normal, one reduction).
        nodes: intermediate nodes per cell (default 4 -> 14 edges).
        keep: inputs kept per node in a genotype (1 or 2; default 2).
        steps: search iterations, each one weight and one architecture step (default 300).
        batch_size: examples per step (default 64).
        w_lr, w_momentum, w_weight_decay: SGD of the supernet weights, cosine-annealed
            (defaults 0.05, 0.9, 3e-4; DARTS uses 0.025 with 50 epochs).
        arch_lr, arch_weight_decay: Adam of alpha/beta (defaults 3e-3, 1e-3; DARTS 3e-4).
        grad_clip: weight-gradient norm clip (default 5).
        device: ``cpu``, ``cuda``, ``auto``.
    """

    channels: int = Field(4, ge=2)
    layers: int = Field(2, ge=1)
    nodes: int = Field(4, ge=1)
    keep: int = Field(2, ge=1, le=2)
    steps: int = Field(300, ge=1)
    batch_size: int = Field(64, ge=1)
    w_lr: float = Field(0.05, gt=0)
    w_momentum: float = Field(0.9, ge=0, lt=1)
    w_weight_decay: float = Field(3e-4, ge=0)
    arch_lr: float = Field(3e-3, gt=0)
    arch_weight_decay: float = Field(1e-3, ge=0)
    grad_clip: float = Field(5.0, gt=0)
    device: str = "cpu"


class HyperConfig(StrictModel):
    """The hypernetwork and its training (docs/methods.md, edgenes, step 3).

    Args:
        pivots: K (>= 2; default 5).
        steps: iterations (default 300), each: lambda ~ U(0, Lambda), one hypernetwork step
            on ``L_val + c (lambda - s)^2`` and one supernet weight step at the same lambda.
        lr: Adam learning rate of the pivots' logits (default 0.05).
        temperature: Gumbel temperature, annealed linearly from the first to the second value (default 1 -> 0.05).
        penalty: c, annealed linearly (default 0.3 -> 3).
        tau: smoothing of alpha*'s one-hot in the soft count (default 0.99).
        init_noise: std of the noise added to each pivot's copy of alpha* (default 0.5).
    """

    pivots: int = Field(5, ge=2)
    steps: int = Field(300, ge=1)
    lr: float = Field(0.05, gt=0)
    temperature: tuple[float, float] = (1.0, 0.05)
    penalty: tuple[float, float] = (0.3, 3.0)
    tau: float = Field(0.99, ge=0, le=1)
    init_noise: float = Field(0.5, ge=0)


@dataclass
class SearchResult:
    """What a search stage gives: logits, the genotype, per-step log, wall-clock seconds and
    the measured FLOPs of all its steps (``None`` when loaded from a file that lacks them)."""

    alpha: torch.Tensor
    beta: torch.Tensor
    genotype: Genotype
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)
    flops: float | None = None


@dataclass
class HypernetResult:
    """What EdgeNES's hypernetwork stage gives: the trained hypernetwork, its seconds, per-step log and FLOPs."""

    hyper: ArchHypernet
    seconds: float
    history: list[dict[str, Any]]
    flops: float | None = None


class _StepFlops:
    """Counts the FLOPs of a loop's first step (the steps of these loops all cost the same)."""

    def __init__(self) -> None:
        self.per_step: float | None = None

    def __call__(self, step: int) -> Any:
        return flop_counter() if step == 0 else contextlib.nullcontext()

    def record(self, counter: Any) -> None:
        if counter is not None and self.per_step is None:
            self.per_step = float(counter.get_total_flops())

    def total(self, steps: int) -> float | None:
        return None if self.per_step is None else self.per_step * steps


def linear_anneal(start: float, end: float, step: int, total: int) -> float:
    """``start + (end - start) * step / (total - 1)`` (``start`` for a single step)."""
    return start if total <= 1 else start + (end - start) * step / (total - 1)


def split_halves(data: Data, seed: int) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """The training split cut in two random halves: weights train on the first, the architecture on the second."""
    if not data.train.in_memory:
        raise ConfigError("the DARTS search needs an in-memory training split (a Split with x and y tensors)")
    x, y = data.train.tensors()
    if len(y) < 4:
        raise ConfigError(f"the DARTS search needs >= 4 training examples, got {len(y)}")
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(int(seed)))
    a, b = perm[: len(y) // 2], perm[len(y) // 2:]
    return (x[a], y[a]), (x[b], y[b])


class _Batches:
    """Random batches with replacement across steps (one generator per half)."""

    def __init__(self, xy: tuple[torch.Tensor, torch.Tensor], batch_size: int, seed: int, device: torch.device) -> None:
        self.x, self.y = xy[0].to(device), xy[1].to(device)
        self.bs = min(batch_size, len(self.y))
        self.g = torch.Generator().manual_seed(int(seed))

    def __call__(self) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(len(self.y), (self.bs,), generator=self.g).to(self.x.device)
        return self.x[idx], self.y[idx]


def _check_finite(loss: torch.Tensor, stage: str, step: int) -> None:
    if not torch.isfinite(loss):
        raise NonFiniteLossError(f"{stage}: the loss became {float(loss)} at step {step}; lower the learning rates (w_lr, arch_lr, lr)")


def _weight_step(net: SearchNetwork, opt: torch.optim.Optimizer, batch: tuple[torch.Tensor, torch.Tensor], weights: tuple[torch.Tensor, torch.Tensor],
                 clip: float, stage: str, step: int) -> float:
    x, y = batch
    opt.zero_grad(set_to_none=True)
    loss = F.cross_entropy(net(x, weights), y)
    _check_finite(loss, stage, step)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
    opt.step()
    return float(loss.detach())


def build_supernet(cfg: SearchConfig, data: Data, seed: int) -> SearchNetwork:
    """A fresh supernet for ``data`` initialised under ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return SearchNetwork(data.input_shape, data.num_classes, cfg.channels, cfg.layers, cfg.nodes)


def _weight_optimizer(net: SearchNetwork, cfg: SearchConfig, steps: int) -> tuple[torch.optim.Optimizer, Callable[[int], None]]:
    opt = torch.optim.SGD(net.parameters(), lr=cfg.w_lr, momentum=cfg.w_momentum, weight_decay=cfg.w_weight_decay)

    def set_lr(step: int) -> None:
        for g in opt.param_groups:
            g["lr"] = 0.5 * cfg.w_lr * (1 + math.cos(math.pi * step / max(steps, 1)))

    return opt, set_lr


def darts_search(data: Data, cfg: SearchConfig, seed: int, run_dir: str | None = None) -> tuple[SearchResult, SearchNetwork]:
    """First-order DARTS: alternate a weight step (train half, softmax weights) and an
    architecture step (other half) for ``cfg.steps`` iterations.

    Returns:
        ``(SearchResult, supernet)``: ``alpha (2, E, 7)``, ``beta (2, E)``, the derived
        genotype alpha* and the trained supernet (EdgeNES continues from it).

    Raises:
        ConfigError: bad config or data. NonFiniteLossError: the search diverged.
    """
    device = torch.device(cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    net = build_supernet(cfg, data, seed).to(device)
    done = _load_stage(run_dir, "search", net)
    if done is not None:
        return done, net
    start = time.perf_counter()
    half_w, half_a = split_halves(data, seed)
    bw, ba = _Batches(half_w, cfg.batch_size, seed + 1, device), _Batches(half_a, cfg.batch_size, seed + 2, device)
    g = torch.Generator().manual_seed(int(seed) + 3)
    alpha = (1e-3 * torch.randn(2, net.num_edges, 7, generator=g)).to(device).requires_grad_()
    beta = (1e-3 * torch.randn(2, net.num_edges, generator=g)).to(device).requires_grad_()
    arch_opt = torch.optim.Adam([alpha, beta], lr=cfg.arch_lr, betas=(0.5, 0.999), weight_decay=cfg.arch_weight_decay)
    w_opt, set_lr = _weight_optimizer(net, cfg, cfg.steps)
    history = []
    counted = _StepFlops()
    net.train()
    for step in range(cfg.steps):
        with counted(step) as counter:
            x, y = ba()
            arch_opt.zero_grad(set_to_none=True)
            arch_loss = F.cross_entropy(net(x, (torch.softmax(alpha, -1), segment_softmax(beta, cfg.nodes))), y)
            _check_finite(arch_loss, "darts search", step)
            arch_loss.backward()
            arch_opt.step()
            set_lr(step)
            weights = (torch.softmax(alpha, -1).detach(), segment_softmax(beta, cfg.nodes).detach())
            w_loss = _weight_step(net, w_opt, bw(), weights, cfg.grad_clip, "darts search", step)
        counted.record(counter)
        history.append({"step": step, "w_loss": w_loss, "arch_loss": float(arch_loss.detach())})
    result = SearchResult(alpha.detach().cpu(), beta.detach().cpu(), derive_genotype(alpha, beta, cfg.keep), time.perf_counter() - start, history,
                          counted.total(cfg.steps))
    _save_stage(run_dir, "search", result, net)
    return result, net


def _relaxed_sample(alpha: torch.Tensor, beta: torch.Tensor, nodes: int, keep: int, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Gumbel-softmax op weights ``(2, E, 7)`` and relaxed Plackett-Luce top-``keep`` inputs ``(2, E)`` (each node's sum = keep)."""
    ops = gumbel_softmax(alpha, temperature)
    khot = torch.cat([relaxed_topk(beta[..., sl], min(keep, sl.stop - sl.start), temperature) for sl in node_slices(nodes)], dim=-1)
    return ops, khot


def train_hypernet(net: SearchNetwork, data: Data, star: SearchResult, search: SearchConfig, cfg: HyperConfig, seed: int,
                   run_dir: str | None = None) -> HypernetResult:
    """Train ``alpha(lambda, a)`` (docs/methods.md, edgenes, step 3) from DARTS's supernet and alpha*.

    Each step draws ``lambda ~ U(0, Lambda)``, a relaxed architecture sample of the
    hypernetwork's logits at lambda (Gumbel-softmax per edge, relaxed top-k per node), its
    soft common-edge count ``s`` with alpha* (:func:`~ensemblekit.nas.relax.soft_common_edges`;
    the relaxed k-hot instead of a one-hot GS(beta), see there), and steps the
    hypernetwork on ``CE_val + c (lambda - s)^2``; then the supernet weights take a CE step on
    the training half with a fresh sample at the same lambda. The node's input weights fed to
    the supernet are the k-hot divided by ``keep``, the scale the search used.

    Returns:
        A :class:`HypernetResult`; history rows hold lambda, s, the losses, T and c.
    """
    device = next(net.parameters()).device
    lam_max = float(star.genotype.num_kept)
    hyper = ArchHypernet(star.alpha, star.beta, lam_max, cfg.pivots, cfg.init_noise, torch.Generator().manual_seed(int(seed) + 5)).to(device)
    if _load_hyper(run_dir, hyper, net):
        meta = read_json(os.path.join(run_dir, "hypernet.json"))  # type: ignore[arg-type]
        return HypernetResult(hyper, float(meta["seconds"]), meta["history"], meta.get("flops"))
    start = time.perf_counter()
    half_w, half_a = split_halves(data, seed)
    bw, ba = _Batches(half_w, search.batch_size, seed + 11, device), _Batches(half_a, search.batch_size, seed + 12, device)
    h_opt = torch.optim.Adam(hyper.parameters(), lr=cfg.lr)
    w_opt, set_lr = _weight_optimizer(net, search, cfg.steps)
    rng = torch.Generator().manual_seed(int(seed) + 13)
    history = []
    counted = _StepFlops()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed) + 14)
        for step in range(cfg.steps):
            temp = linear_anneal(*cfg.temperature, step, cfg.steps)
            c = linear_anneal(*cfg.penalty, step, cfg.steps)
            lam = float(torch.rand((), generator=rng)) * lam_max
            with counted(step) as counter:
                alpha, beta = hyper(lam)
                ops, khot = _relaxed_sample(alpha, beta, search.nodes, search.keep, temp)
                s = soft_common_edges(ops, khot, star.genotype, cfg.tau)
                x, y = ba()
                ce = F.cross_entropy(net(x, (ops, khot / search.keep)), y)
                loss = ce + c * (lam - s) ** 2
                _check_finite(loss, "hypernetwork", step)
                h_opt.zero_grad(set_to_none=True)
                net.zero_grad(set_to_none=True)
                loss.backward()
                h_opt.step()
                set_lr(step)
                with torch.no_grad():
                    w_ops, w_khot = _relaxed_sample(*hyper(lam), search.nodes, search.keep, temp)
                w_loss = _weight_step(net, w_opt, bw(), (w_ops, w_khot / search.keep), search.grad_clip, "hypernetwork", step)
            counted.record(counter)
            history.append({"step": step, "lambda": lam, "s": float(s.detach()), "val_ce": float(ce.detach()), "w_loss": w_loss, "temperature": temp, "c": c})
    seconds = time.perf_counter() - start
    result = HypernetResult(hyper, seconds, history, counted.total(cfg.steps))
    _save_hyper(run_dir, result, net)
    return result


# ---------------------------------------------------------------------------- stage files
def _save_stage(run_dir: str | None, name: str, result: SearchResult, net: SearchNetwork) -> None:
    if run_dir is None:
        return
    os.makedirs(run_dir, exist_ok=True)
    tensors = {"alpha": result.alpha, "beta": result.beta, **{f"net.{k}": v.detach().cpu() for k, v in net.state_dict().items()}}
    save_tensors(os.path.join(run_dir, f"{name}.safetensors"), tensors)
    write_json(os.path.join(run_dir, f"{name}.json"), {"genotype": result.genotype.to_json(), "seconds": result.seconds, "history": result.history,
                                                      "flops": result.flops})


def _load_stage(run_dir: str | None, name: str, net: SearchNetwork) -> SearchResult | None:
    if run_dir is None or not os.path.exists(os.path.join(run_dir, f"{name}.json")):
        return None
    tensors, _ = load_tensors(os.path.join(run_dir, f"{name}.safetensors"))
    meta = read_json(os.path.join(run_dir, f"{name}.json"))
    net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
    return SearchResult(tensors["alpha"], tensors["beta"], Genotype.from_json(meta["genotype"]), float(meta["seconds"]), meta["history"], meta.get("flops"))


def _save_hyper(run_dir: str | None, result: HypernetResult, net: SearchNetwork) -> None:
    if run_dir is None:
        return
    tensors = {"alphas": result.hyper.alphas.detach().cpu(), "betas": result.hyper.betas.detach().cpu(),
               **{f"net.{k}": v.detach().cpu() for k, v in net.state_dict().items()}}
    save_tensors(os.path.join(run_dir, "hypernet.safetensors"), tensors)
    write_json(os.path.join(run_dir, "hypernet.json"), {"seconds": result.seconds, "history": result.history, "flops": result.flops})


def _load_hyper(run_dir: str | None, hyper: ArchHypernet, net: SearchNetwork) -> bool:
    if run_dir is None or not os.path.exists(os.path.join(run_dir, "hypernet.json")):
        return False
    tensors, _ = load_tensors(os.path.join(run_dir, "hypernet.safetensors"))
    with torch.no_grad():
        hyper.alphas.copy_(tensors["alphas"])
        hyper.betas.copy_(tensors["betas"])
    net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
    return True
