"""Ensembles whose members share one network or one training run, as registered methods:
BatchEnsemble, Packed-Ensembles, MIMO, Masksembles, MC-dropout and (Multi)SWAG.

The submodules hold the model transformations and predictors; the methods that train them
are in :mod:`ensemblekit.methods` (``batch_ensemble``, ``packed``, ``mimo``, ``masksembles``,
``mc_dropout``, ``swag``). This package imports nothing at import time, so that the model
registry can import the ``packed`` and ``head_dropout`` wrappers without a cycle.
"""

__all__ = ["batchensemble", "masksembles", "mcdropout", "mimo", "packed", "shared", "swag"]
