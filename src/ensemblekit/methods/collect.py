"""The collectors of a training trajectory: what is kept at each collection point.

:class:`Collector` keeps a snapshot of the weights (snapshot ensembles, Huang et al. 2017; Fast
Geometric Ensembling, Garipov et al. 2018); :class:`Averager` keeps their running equal-weight
average (Stochastic Weight Averaging, Izmailov et al. 2018). SWAG's moments are
:class:`ensemblekit.efficient.swag.SWAGCollector`. Each is given its collection points as a
``step -> bool`` callable (:class:`ensemblekit.methods.trajectory.CollectionPoints`).
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from ..ensemble import Ensemble
from ..training.callbacks import Callback

__all__ = ["Collector", "Averager", "last_members", "member_distances", "plot_policy", "collection_report"]


class Collector(Callback):
    """Copy the weights after every iteration ``step`` (count of iterations done) for which ``when(step)`` holds.

    The copies (all stacked tensors, BatchNorm buffers included) are checkpointed with
    the run. :meth:`ensemble` stacks them into one Ensemble, oldest first, with
    ``members_info`` recording the iteration and epoch of each.
    """

    name = "collector"

    def __init__(self, when: Callable[[int], bool]) -> None:
        self.when = when
        self.snapshots: list[dict[str, torch.Tensor]] = []
        self.steps: list[int] = []
        self.epochs: list[float] = []

    @property
    def count(self) -> int:
        """How many collection points have been reached (snapshots taken)."""
        return len(self.steps)

    def on_step_end(self, trainer: Any, step: int, batch: Any) -> None:
        if self.when(step):
            self.snapshots.append({k: v.detach().clone() for k, v in trainer.ensemble.state_tensors().items()})
            self.steps.append(step)
            self.epochs.append(round(step / trainer.steps_per_epoch, 4))

    def ensemble(self, like: Ensemble) -> Ensemble:
        """The collected weights as an Ensemble shaped like ``like`` (the trajectory's ensemble) per snapshot."""
        parts = []
        for snap, step, epoch in zip(self.snapshots, self.steps, self.epochs):
            part = like.clone()
            part.load_state_tensors(snap)
            part.members_info = [{**info, "step": step, "epoch": epoch} for info in part.members_info]
            parts.append(part)
        return Ensemble.cat(parts)

    def state_dict(self) -> dict[str, Any]:
        return {"snapshots": {str(i): s for i, s in enumerate(self.snapshots)}, "steps": self.steps, "epochs": self.epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self.snapshots = [state["snapshots"][str(i)] for i in range(len(state["steps"]))]
        self.steps, self.epochs = list(state["steps"]), list(state["epochs"])


class Averager(Callback):
    """Running equal-weight average of the parameters at the iterations where ``when(step)`` holds (SWA).

    Uses ``torch.optim.swa_utils.get_swa_multi_avg_fn`` on the stacked tensors, so each
    member of the trajectory is averaged with its own iterates. Buffers are not averaged;
    BatchNorm statistics must be recomputed afterwards (:func:`ensemblekit.ensemble.bn.recompute_bn`).
    """

    name = "averager"

    def __init__(self, when: Callable[[int], bool]) -> None:
        from torch.optim.swa_utils import get_swa_multi_avg_fn

        self.when = when
        self.avg_fn = get_swa_multi_avg_fn()
        self.average: dict[str, torch.Tensor] | None = None
        self.count = 0
        self.steps: list[int] = []

    def on_step_end(self, trainer: Any, step: int, batch: Any) -> None:
        if not self.when(step):
            return
        current = {k: v.detach() for k, v in trainer.ensemble.state_tensors(buffers=False).items()}
        if self.average is None:
            self.average = {k: v.clone() for k, v in current.items()}
        else:
            keys = list(self.average)
            self.avg_fn([self.average[k] for k in keys], [current[k] for k in keys], self.count)
        self.count += 1
        self.steps.append(step)

    def apply(self, ensemble: Ensemble) -> Ensemble:
        """A copy of ``ensemble`` with the averaged parameters (buffers unchanged)."""
        out = ensemble.clone()
        if self.average is not None:
            with torch.no_grad():
                for name, t in out.state_tensors().items():
                    if name in self.average:
                        t.copy_(self.average[name])
        return out

    def state_dict(self) -> dict[str, Any]:
        return {} if self.average is None else {"average": self.average, "count": self.count, "steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.average = {k: v.clone() for k, v in state["average"].items()}
            self.count, self.steps = int(state["count"]), list(state["steps"])


def last_members(ensemble: Ensemble, keep: int | None) -> Ensemble:
    """The last ``keep`` members of ``ensemble`` (all of them when ``keep`` is ``None`` or not smaller)."""
    if keep and keep < len(ensemble):
        return ensemble.subset(range(len(ensemble) - keep, len(ensemble)))
    return ensemble


def member_distances(ensemble: Ensemble) -> torch.Tensor:
    """Pairwise L2 distances ``(M, M)`` between members' flattened parameters (one group)."""
    flat = torch.cat([p.detach().reshape(p.shape[0], -1) for g in ensemble.groups[:1] for p in g.params.values()], dim=1)
    return torch.cdist(flat.double(), flat.double())


def plot_policy(method: Any, spe: int, path: str) -> None:
    from ..report.plots import lr_plot

    policy, marks = method.lr_policy(spe)
    total = method.train_config_.total_steps(spe)
    lr_plot(range(total), [policy(s) for s in range(total)], path, marks=marks, steps_per_epoch=spe, title=f"{method.name}: {getattr(policy, '__name__', '')}")


def collection_report(method: Any, run: Any, data: Any) -> None:
    """Plots of a collected trajectory (the FGE paper's figure): the policy with the collection
    points, each member's test error and the ensemble's as members are added (regression: the
    test NLL), and the distances in weight space between members (``members.json`` holds the numbers)."""
    from ..data.batching import steps_per_epoch
    from ..evaluation.evaluate import evaluate
    from ..report.plots import line_plot, matrix_plot
    from ..serialization import write_json

    ens = method.ensemble_
    plot_policy(method, steps_per_epoch(data.train, method.train_config_.batch_size), run.file("lr_schedule.png"))
    res = evaluate(ens, data.test)
    k = list(range(1, len(ens) + 1))
    if data.is_regression:
        member_err, ens_err, label, key = res["members"]["nll"], res["size_curve"]["nll"], "test NLL", "nll"
    else:
        member_err = [100 * (1 - a) for a in res["members"]["accuracy"]]
        ens_err = [100 * (1 - a) for a in res["size_curve"]["accuracy"]]
        label, key = "test error (%)", "error"
    line_plot({"each member": (k, member_err), "ensemble of the first k": (k, ens_err)}, run.file("members.png"),
              "member (in order of collection)", label, title=f"{method.name}: collected members")
    dist = member_distances(ens)
    epochs = [info.get("epoch", "") for info in ens.members_info]
    matrix_plot(dist, run.file("distances.png"), labels=[f"ep {e}" for e in epochs], title=f"{method.name}: L2 distance between members", cbar="||w_i - w_j||")
    write_json(run.file("members.json"), {"epochs": epochs, f"member_test_{key}": member_err, f"ensemble_test_{key}": ens_err,
                                          "distances": dist.tolist()})
