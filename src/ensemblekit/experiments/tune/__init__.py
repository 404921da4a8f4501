"""Hyperparameter search (optuna): config, search space, the search itself, the report."""

from .config import ParamSpec, PruneConfig, RefineConfig, SearchSpace, TuneConfig
from .report import format_trial, write_report
from .search import TrialReporter, run_tune
from ...config import set_paths
from .space import narrow_param, refine_space

__all__ = [
    "ParamSpec", "PruneConfig", "RefineConfig", "SearchSpace", "TuneConfig",
    "TrialReporter", "format_trial", "narrow_param", "refine_space", "run_tune", "set_paths", "write_report",
]
