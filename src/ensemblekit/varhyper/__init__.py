"""Variational hypernetworks with complexity control (Grebenkova, Bakhteev & Strijov 2020; docs/methods.md, varhyper).

One training run of a hypernetwork G(lambda) gives a whole family of Bayesian networks
of controlled complexity; any member can be taken out (:meth:`HyperModel.members`),
pruned by ``mu^2 / sigma^2`` (:mod:`.prune`) and compared with separately trained
variational and L2 nets (:mod:`.family`).

May import: the base modules, ``data``, ``training`` and ``ensemble``.
"""

from .bayes import SUPPORTED_LAYERS, kl_to_prior, sample_weights, variational_shapes, weight_names
from .family import accuracy_per_member, family_kl, pruning_curve, train_hyper, train_l2, train_separate
from .forms import FORMS, LinearForm, LowRankForm, PiecewiseForm, SeparateForm, create_form
from .model import DEFAULT_GRID, HyperModel
from .prune import DEFAULT_FRACTIONS, kept_share, magnitude_scores, prune_mask, prune_weights, snr_scores

__all__ = [
    "SUPPORTED_LAYERS", "kl_to_prior", "sample_weights", "variational_shapes", "weight_names",
    "accuracy_per_member", "family_kl", "pruning_curve", "train_hyper", "train_l2", "train_separate",
    "FORMS", "LinearForm", "LowRankForm", "PiecewiseForm", "SeparateForm", "create_form",
    "DEFAULT_GRID", "HyperModel", "DEFAULT_FRACTIONS", "kept_share", "magnitude_scores", "prune_mask",
    "prune_weights", "snr_scores",
]
