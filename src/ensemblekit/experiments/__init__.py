"""Experiments: what the CLI runs, and the one results path.

Owns: one training run (:mod:`.run`), the results row (:mod:`.results`), cached cells
(:mod:`.cells`, :mod:`.units`: spec hash, data digest, code fingerprint, locks),
``compare`` (methods x budgets x seeds), the family presets (:mod:`.presets`:
``nes``, ``varhyper``, ``curve``), ``tune``, ``doctor`` and the backends (local, Ray).

May import: everything below ``cli``.
"""

from .compare import run_compare
from .run import run_training
from .tune import TuneConfig, run_tune

__all__ = ["run_training", "run_compare", "run_tune", "TuneConfig"]
