"""Plots of margin boosting (docs/methods.md, boosting): training-margin histograms after each round,
the mean discount per round, and test error against the number of members."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib
import numpy as np
import torch

from .plots import line_plot, new_figure, save_figure

__all__ = ["margin_histograms", "discount_plot", "error_vs_members", "boosting_report"]


def margin_histograms(margins: Any, path: str | Path, bins: int = 50, title: str | None = None) -> Path:
    """One outlined histogram per round of the training margins ``(T, N)`` on a shared axis."""
    m = torch.as_tensor(margins).float().cpu().numpy()
    if m.ndim != 2:
        raise ValueError(f"margins must be (T, N), got shape {m.shape}")
    fig = new_figure((6.4, 4.0))
    ax = fig.add_subplot()
    edges = np.linspace(float(m.min()), float(m.max()) + 1e-6, bins + 1)
    cmap = matplotlib.colormaps["viridis"]
    for t, row in enumerate(m):
        color = cmap(t / max(len(m) - 1, 1))
        ax.hist(row, bins=edges, histtype="step", color=color, label=f"member {t + 1} (mean {row.mean():.2f})")
    ax.axvline(0.0, color="k", lw=0.8, ls="--")
    ax.set_xlabel("training margin f_y - max_{j != y} f_j")
    ax.set_ylabel("objects")
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title)
    return save_figure(fig, path)


def discount_plot(rounds: Sequence[Mapping[str, Any]], path: str | Path, title: str | None = None) -> Path:
    """Mean discount and mean training margin of each member."""
    t = [r["member"] + 1 for r in rounds]
    series = {"mean discount g": (t, [r["mean_discount"] for r in rounds]),
              "mean training margin": (t, [r["margins"]["mean"] for r in rounds])}
    return line_plot(series, path, "member", "value", title=title)


def error_vs_members(curves: Mapping[str, Sequence[float]], path: str | Path, title: str | None = None) -> Path:
    """Ensemble test error (%) of the first k members, one line per method label."""
    series = {label: (list(range(1, len(err) + 1)), list(err)) for label, err in curves.items()}
    return line_plot(series, path, "number of members k", "test error of the first k (%)", title=title)


def boosting_report(method: Any, run: Any, data: Any) -> None:
    """Write ``margins.png``, ``discounts.png``, ``members.png`` and ``boosting.json`` into a run."""
    from ..evaluation.evaluate import evaluate
    from ..serialization import write_json

    margin_histograms(method.margins_, run.file("margins.png"), title="boosting: training margins after each member")
    discount_plot(method.rounds_, run.file("discounts.png"), title="boosting: discount per member")
    res = evaluate(method.ensemble_, data.test)
    ens_err = [100 * (1 - a) for a in res["size_curve"]["accuracy"]]
    member_err = [100 * (1 - a) for a in res["members"]["accuracy"]]
    line_plot({"each member": (list(range(1, len(member_err) + 1)), member_err),
               "ensemble of the first k": (list(range(1, len(ens_err) + 1)), ens_err)},
              run.file("members.png"), "member", "test error (%)", title="boosting: members in order")
    write_json(run.file("boosting.json"), {"rounds": method.rounds_, "member_test_error": member_err, "ensemble_test_error": ens_err})
