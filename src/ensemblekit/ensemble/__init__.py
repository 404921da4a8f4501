"""The stacked Ensemble: the container, its member groups, its file, its kernels, its placement.

Owns: :class:`Ensemble` (:mod:`.container`: members, forward, ``predict_proba``, save/load,
export as plain modules; a registered predictor kind), :class:`MemberGroup` and the state
key format (:mod:`.group`), the file format and the rebuilding of saved groups (:mod:`.io`),
the stacked kernels of common layers (:mod:`.stacked`), members sharded over devices
(:class:`PlacedEnsemble`, :mod:`.placement`) and BatchNorm recomputation for stacked
members (:func:`recompute_bn`, :mod:`.bn`).

May import: the base modules (``errors``, ``registry``, ``serialization``, ``predictors``...),
``data``, ``metrics``, ``evaluation`` (the one prediction pass, :meth:`Ensemble.predict_proba`),
``models`` and ``training`` (the trainable-model protocol). It knows none of its consumers:
exporting, uncertainty outputs and reports are functions of a predictor in the layers above
(:func:`ensemblekit.export.export`, :func:`ensemblekit.evaluation.predict.predict_array`).
"""

from __future__ import annotations

from .bn import has_batchnorm, recompute_bn
from .container import INFERENCE_ACTIVATION_BYTES, Ensemble
from .group import MemberGroup, member_loop, parse_state_key, state_key
from .io import ENSEMBLE_FORMAT, rebuild_template, saved_groups
from .placement import PlacedEnsemble, split_members

__all__ = ["Ensemble", "MemberGroup", "INFERENCE_ACTIVATION_BYTES", "member_loop", "state_key", "parse_state_key",
           "ENSEMBLE_FORMAT", "rebuild_template", "saved_groups", "PlacedEnsemble", "split_members", "has_batchnorm", "recompute_bn"]
