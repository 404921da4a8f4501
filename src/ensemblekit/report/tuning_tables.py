"""The tuning-cost table of a comparison with ``tuning:``: what each method's search cost and found."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from .tables import human, markdown_table

__all__ = ["tuning_markdown"]


def _value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def tuning_markdown(summaries: Sequence[Mapping[str, Any]]) -> str:
    """``## Tuning``: per tuned method its trials (failed among them), the best validation objective,
    the search's training seconds and FLOPs (never part of the method's budget) and the setting found."""
    if not summaries:
        return ""
    objective = summaries[0]["objective"]
    trials = sorted({int(s["trials"]) for s in summaries})
    body = [[s["method"], str(s["trials"]), str(s["failed"]), f"{s['best_value']:.4g}", f"{s['wall_s']:.1f}", human(s["train_flops"]),
             ", ".join(f"`{k}` = {_value(v)}" for k, v in s["best_params"].items())] for s in summaries]
    header = ["method", "trials", "failed", f"best {objective}", "tuning seconds", "tuning training FLOPs", "best setting"]
    equal = f"{trials[0]} trials each" if len(trials) == 1 else f"UNEQUAL trial counts {trials}"
    intro = (f"Every tuned method had the same search: {equal}, scored by {objective} on the validation split "
             "(the test split is never seen). Its cost is reported here and not added to the method's budget; "
             "the `(tuned)` rows train the best setting for every budget and seed.")
    return "\n".join(["## Tuning", "", intro, "", markdown_table(header, body), ""])
