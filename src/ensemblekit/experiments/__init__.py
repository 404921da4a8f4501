"""Runs behind the CLI: one training run, and comparisons of methods x budgets x seeds."""

from .compare import run_compare
from .run import run_training
from .tune import TuneConfig, run_tune

__all__ = ["run_training", "run_compare", "run_tune", "TuneConfig"]
