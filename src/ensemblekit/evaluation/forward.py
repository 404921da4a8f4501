"""The one prediction pass: a predictor's members over a set of inputs, in batches, with test-time augmentation.

Every number ensemblekit reports about a predictor comes from :func:`predictive`: the
engine's validation, the results row, the uncertainty evaluation, ``ensemblekit evaluate``
and every kind's ``predict_proba``. It asks the predictor for one thing, its inference
logits ``pred.logits(x) -> (M, B, C)`` in eval mode (the trainable-model protocol of
:mod:`ensemblekit.training.protocol` and :class:`ensemblekit.predictors.Predictor`): a
stacked ensemble runs a few members at a time there, a curve its point at ``eval_t``, a
hypernetwork its members at ``eval_lambdas``.

Test-time augmentation (TTA) averages each member's probabilities, and separately its
logits, over a fixed list of deterministic transforms of the inputs (see
:func:`ensemblekit.data.augment.build_tta`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, Sequence

import torch

from ..data.dataset import Split
from ..errors import DataError
from ..metrics.head_outputs import CLASSIFICATION, Readout
from ..metrics.predictive import Categorical, Gaussian

__all__ = ["Transform", "member_logits", "example_scores", "predictive"]

Transform = Callable[[torch.Tensor], torch.Tensor]


@torch.no_grad()
def member_logits(pred: Any, x: torch.Tensor | Split, batch_size: int = 1024,
                  forward: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Members' logits ``(M, N, C)`` (float32, on the predictor's device) in eval mode, ``batch_size`` examples at a time.

    Args:
        pred: a predictor or trainable model (``logits``, ``eval``, ``train``, ``device``).
        x: inputs ``(N, ...)`` or a :class:`~ensemblekit.data.dataset.Split`.
        forward: the inference forward to use instead of ``pred.logits``.
    """
    fwd = forward if forward is not None else pred.logits
    was = bool(getattr(pred, "training", False))
    pred.eval()
    try:
        if isinstance(x, Split):
            chunks = [fwd(xb).float() for xb, _ in x.batches(batch_size, device=pred.device)]
        elif isinstance(x, torch.Tensor):
            chunks = [fwd(x[i:i + batch_size].to(pred.device)).float() for i in range(0, x.shape[0], batch_size)]
        else:
            raise DataError(f"x must be a tensor or a Split, got {type(x).__name__}")
    finally:
        pred.train(was)
    return torch.cat(chunks, dim=1)


@torch.no_grad()
def example_scores(pred: Any, x: torch.Tensor | Split, batch_size: int = 1024, cpu: bool = True) -> dict[str, torch.Tensor]:
    """The scores ``(N,)`` a predictor computes itself (``pred.example_scores(xb) -> {name: (B,)}``, in eval
    mode, ``batch_size`` examples at a time; e.g. a DDU's feature density), by name."""
    parts: list[dict[str, torch.Tensor]] = []
    was = bool(getattr(pred, "training", False))
    pred.eval()
    try:
        batches = (xb for xb, _ in x.batches(batch_size, device=pred.device)) if isinstance(x, Split) else (
            x[i:i + batch_size].to(pred.device) for i in range(0, x.shape[0], batch_size))
        parts = [pred.example_scores(xb) for xb in batches]
    finally:
        pred.train(was)
    out = {k: torch.cat([p[k].double() for p in parts]) for k in parts[0]} if parts else {}
    return {k: v.cpu() for k, v in out.items()} if cpu else out


def predictive(pred: Any, x: torch.Tensor | Split, tta: Sequence[Transform] | None = None, batch_size: int = 1024, *,
               cpu: bool = True, forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
               readout: Readout | None = None) -> Categorical | Gaussian:
    """The members' predictive distributions on ``x``: one pass per test-time transform.

    The predictor's :class:`~ensemblekit.metrics.head_outputs.Readout` (``pred.readout``;
    classification when it has none) says what its outputs are: logits (a
    :class:`~ensemblekit.metrics.predictive.Categorical`), or a regression head's means and
    variances (a :class:`~ensemblekit.metrics.predictive.Gaussian`), with the inputs
    standardised before the forward pass and the Gaussian mapped back to the targets' units
    when the predictor was trained on standardised data. Test-time transforms act on the
    inputs as given.

    Args:
        pred: a predictor (any method's ``ensemble_``, a loaded file) or a trainable model.
        x: inputs ``(N, ...)`` or a Split, in the data's own units.
        tta: deterministic transforms of the inputs whose predictions are averaged; ``None``
            or empty: the plain inputs.
        batch_size: examples per forward pass.
        cpu: return CPU tensors (``False``: where the predictor computed them).
        forward: the inference forward instead of ``pred.logits`` (e.g. a fixed member chunk).
        readout: read the outputs this way instead of by ``pred.readout`` (the engine's
            validation of a model being trained on standardised data).

    A predictor that scores examples itself (``example_scores``, DDU's density) adds those scores
    to the Categorical's ``extras`` (one more pass over ``x``).

    Returns:
        A Categorical (probabilities and logits ``(M, N, C)``) or a Gaussian (members' means
        and variances; test-time transforms average each).

    Example:
        >>> pd = predictive(method.ensemble_, data.test)
        >>> pd.probs.shape                      # (M, N, C)
    """
    ro = readout if readout is not None else getattr(pred, "readout", None) or CLASSIFICATION
    if ro.scaling is not None:
        inner = forward if forward is not None else pred.logits
        forward = lambda xb: inner(ro.inputs(xb))  # noqa: E731

    own = getattr(pred, "example_scores", None) if not ro.is_regression else None

    def one(inputs: torch.Tensor | Split) -> Categorical | Gaussian:
        z = member_logits(pred, inputs, batch_size, forward)
        out = ro.read(z.cpu() if cpu else z)
        if own is not None:
            out = replace(out, extras=example_scores(pred, inputs, batch_size, cpu))  # type: ignore[arg-type]
        return out

    if not tta:
        return one(x)
    xs = x.tensors()[0] if isinstance(x, Split) else x
    kind = Gaussian if ro.is_regression else Categorical
    return kind.mean_of([one(t(xs)) for t in tta])  # type: ignore[arg-type]
