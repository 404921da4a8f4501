"""``ensemblekit schedule``: draw a run's learning-rate policy (lr vs iteration) to a PNG."""

from __future__ import annotations

from ..config import RunConfig
from ..data.batching import steps_per_epoch
from ..data.dataset import Data
from ..report.plots import lr_plot
from .run import build_method

__all__ = ["plot_schedule"]


def plot_schedule(cfg: RunConfig, data: Data, path: str) -> dict[str, float]:
    """Plot the policy the configured method would follow on ``data``; returns a summary."""
    method = build_method(cfg.method, cfg.method.model_spec(cfg.model), cfg.train.model_dump(exclude_unset=True), cfg.seed)
    method.validate()
    spe = steps_per_epoch(data.train, method.train_config_.batch_size)
    policy, marks = method.lr_policy(spe)
    total = _total_steps(method, spe)
    steps = list(range(total))
    lrs = [policy(s) for s in steps]
    lr_plot(steps, lrs, path, marks=marks, steps_per_epoch=spe, title=f"{cfg.method.display}: {getattr(policy, '__name__', 'policy')}")
    return {"iterations": total, "steps_per_epoch": spe, "max_lr": max(lrs), "min_lr": min(lrs), "final_lr": lrs[-1], "collections": len(marks)}


def _total_steps(method, spe: int) -> int:  # noqa: ANN001
    total = getattr(method, "total_epochs", None)
    return int(total() * spe) if callable(total) else method.train_config_.total_steps(spe)
