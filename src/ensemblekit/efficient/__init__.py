"""Ensembles whose members share one network or one training run: BatchEnsemble,
Packed-Ensembles, MIMO, Masksembles, MC-dropout and (Multi)SWAG.

Owns: the model transformations (:mod:`.batchensemble`, :mod:`.mimo`, :mod:`.masksembles`,
registered in :data:`~ensemblekit.efficient.shared.TRANSFORMS`), the ``packed`` and
``head_dropout`` model wrappers, and two predictor kinds: the one-network
:class:`~ensemblekit.efficient.shared.SharedEnsemble` and
:class:`~ensemblekit.efficient.mcdropout.MCDropout` (each owns its file and its export).
The methods that train them are in :mod:`ensemblekit.methods` (``batch_ensemble``,
``packed``, ``mimo``, ``masksembles``, ``mc_dropout``, ``swag``). The registries that hold
these entries import this package's modules when a lookup misses, so this package imports
nothing at import time and nothing imports it to register them.

May import: the base modules (``errors``, ``registry``, ``serialization``, ``predictors``...),
``data``, ``metrics``, ``evaluation``, ``models``, ``training`` and ``ensemble``; never
``export`` or anything above it.
"""

__all__ = ["batchensemble", "masksembles", "mcdropout", "mimo", "packed", "shared", "swag"]
