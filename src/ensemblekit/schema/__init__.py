"""Config schemas' common ground: the strict pydantic base, one-line validation errors, and
reading config files (safe YAML, ``--set`` overrides, validation into a schema).

Owns: :class:`StrictModel` (unknown keys are errors), :func:`format_validation_error`, and
:func:`load_yaml` / :func:`apply_overrides` / :func:`parse_config` / :func:`load_config`.
May import: pydantic, yaml and :mod:`ensemblekit.errors` only; every section's schema
(``TrainConfig`` in :mod:`ensemblekit.training.config`, ``EvaluationConfig`` in
:mod:`ensemblekit.evaluation.config`, a method's parameters beside the method, the run and
compare configs in :mod:`ensemblekit.config`) builds on it, next to its owner.
"""

from .base import StrictModel, format_validation_error, valid_keys
from .files import apply_overrides, load_config, load_yaml, parse_config, parse_yaml, set_paths

__all__ = ["StrictModel", "format_validation_error", "valid_keys", "parse_yaml", "load_yaml", "set_paths", "apply_overrides",
           "parse_config", "load_config"]
