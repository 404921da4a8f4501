"""One pass over a split per member: the final layer's input features, the curvature, the validation NLL.

The features ``φ`` are the inputs of the member's final ``nn.Linear``
(:func:`ensemblekit.models.gaussian_head.final_linear`), read with a forward hook in eval
mode; the inputs are standardised first when the ensemble's readout has a scaling (the
network was trained on standardised inputs). For regression the likelihood's per-example
variance is the member's own ``σ² = softplus(raw) + min_var`` (standardised units), and the
curvature covers the D mean rows of the final layer; a means-only head (width D) has no such
variance and is refused.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..data.dataset import Split
from ..errors import ConfigError, DataError
from ..metrics.classification import nll
from ..metrics.regression import mixture_nll
from ..models.gaussian_head import final_linear
from .curvature import Curvature, with_bias
from .posterior import LastLayerPosterior, function_variance_from, projected_squares, variance_from_squares
from .probit import probit_adjust

__all__ = ["head_of", "head_outputs", "forward_features", "member_posterior", "validation_nll"]


def head_of(model: nn.Module) -> tuple[nn.Module | None, str, nn.Linear]:
    """``(parent, attribute, layer)`` of the final linear layer of ``model``.

    Raises:
        ConfigError: ``model`` does not end in an ``nn.Linear`` (naming it).
    """
    found = final_linear(model)
    if found is None:
        raise ConfigError(f"laplace needs a network that ends in an nn.Linear (the layer its posterior covers); "
                          f"model {type(model).__name__} does not")
    return found


def head_outputs(readout: Any, linear: nn.Linear) -> int:
    """K, the outputs the posterior covers: the classes, or a learned-variance head's D means.

    Raises:
        ConfigError: a regression head that is means only, or of a width other than 2D.
    """
    if not readout.is_regression:
        return int(linear.out_features)
    d = int(readout.num_outputs)
    if linear.out_features == d:
        raise ConfigError("laplace regression needs a learned-variance head (model gaussian: learned); a means-only head has no per-example variance")
    if linear.out_features != 2 * d:
        raise ConfigError(f"laplace regression expects a final layer of width {2 * d} (means and raw variances), got {linear.out_features}")
    return d


@torch.no_grad()
def forward_features(model: nn.Module, linear: nn.Linear, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(φ, z)``: the final layer's inputs ``(B, d)`` and the network's outputs ``(B, K)`` on ``x``.

    Raises:
        ConfigError: the final layer was not called, or not on ``(B, d)`` inputs.
    """
    box: list[torch.Tensor] = []
    handle = linear.register_forward_hook(lambda mod, inputs, out: box.append(inputs[0]))
    try:
        z = model(x)
    finally:
        handle.remove()
    if len(box) != 1 or box[0].dim() != 2 or z.shape != (box[0].shape[0], linear.out_features):
        shape = tuple(box[0].shape) if box else None
        raise ConfigError(f"laplace needs the network's output to be its final Linear applied once to (B, d) features; got features {shape}")
    return box[0], z


def _batches(ensemble: Any, split: Split, batch_size: int) -> Any:
    if not isinstance(split, Split):
        raise DataError(f"laplace fits on a Split, got {type(split).__name__}")
    ro = ensemble.readout
    for xb, yb in split.batches(batch_size, device=ensemble.device):
        yield ro.inputs(xb), yb


@torch.no_grad()
def member_posterior(ensemble: Any, net: nn.Module, split: Split, structure: str, batch_size: int) -> LastLayerPosterior:
    """The last-layer posterior of ``net``, a member of ``ensemble`` (prior precision 1; fit it afterwards).

    Raises:
        ConfigError: the member has no final linear layer, or a regression head it cannot use.
        DataError: an empty split, or a curvature that is not finite.
    """
    linear = head_of(net)[2]
    ro = ensemble.readout
    k = head_outputs(ro, linear)
    bias = linear.bias is not None
    curv = Curvature(structure, ro.task, k, linear.in_features + int(bias))
    for xb, _ in _batches(ensemble, split, batch_size):
        phi, z = forward_features(net, linear, xb)
        phi_t = with_bias(phi, bias)
        if ro.is_regression:
            curv.add_regression(phi_t, F.softplus(z[:, k:].double()) + ro.min_var)
        else:
            curv.add_classification(phi_t, torch.softmax(z.double(), dim=-1))
    w = linear.weight[:k]
    theta = torch.cat([w, linear.bias[:k, None]], dim=1) if bias else w
    return LastLayerPosterior(theta, curv.factors(), structure=structure, task=ro.task, num_data=curv.num_data, bias=bias)


@torch.no_grad()
def validation_nll(ensemble: Any, nets: list[nn.Module], posteriors: list[LastLayerPosterior], val: Split,
                   batch_size: int) -> Callable[[float], float]:
    """``δ -> NLL`` of the pooled probit predictive on ``val`` with every member at prior precision ``δ``.

    The networks run once (features and outputs cached, float64 on CPU), and where the
    posterior's eigenbasis does not depend on ``δ`` (kfac, diag, regression's block-diagonal
    full) the features are projected onto it once too, so each ``δ`` costs one small matmul per
    member. Classification: the NLL of the mean of the members' adjusted softmax; regression: the
    exact NLL of the members' Gaussian mixture with variances ``σ² + v`` (in the targets' units).
    """
    ro = ensemble.readout
    cached, ys = [], []
    for m, (net, post) in enumerate(zip(nets, posteriors)):
        linear = head_of(net)[2]
        feats, outs = [], []
        for xb, yb in _batches(ensemble, val, batch_size):
            phi, z = forward_features(net, linear, xb)
            feats.append(with_bias(phi, post.bias).cpu())
            outs.append(z.double().cpu())
            if m == 0:
                ys.append(yb.cpu())
        if not feats:
            raise DataError("laplace prior: the validation split gave no examples")
        phi_t = torch.cat(feats)
        fixed = None if post.basis_depends_on_prior else projected_squares(phi_t, post.variance_factors()[0])
        cached.append((phi_t, fixed, torch.cat(outs)))
    y = torch.cat(ys)
    d = int(ro.num_outputs) if ro.is_regression else 0

    def variance(post: LastLayerPosterior, phi_t: torch.Tensor, fixed: torch.Tensor | None, delta: float) -> torch.Tensor:
        basis, weights = post.variance_factors(delta)
        return function_variance_from(phi_t, basis, weights) if fixed is None else variance_from_squares(fixed, weights)

    def score(delta: float) -> float:
        zs = [probit_adjust(z, variance(post, phi_t, fixed, delta), d) for post, (phi_t, fixed, z) in zip(posteriors, cached)]
        pd = ro.read(torch.stack(zs))
        return float(mixture_nll(pd, y)) if ro.is_regression else float(nll(pd.probs.mean(0), y))

    return score
