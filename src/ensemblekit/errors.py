"""Typed exceptions.

Every error a user can cause (a bad config, bad data, a diverging run) is one of
these; the CLI turns them into one clear line and exit code 2, never a traceback.
"""

from __future__ import annotations

__all__ = ["EnsembleKitError", "ConfigError", "DataError", "TrainingError", "NonFiniteLossError"]


class EnsembleKitError(Exception):
    """Base class of every error ensemblekit raises on purpose."""


class ConfigError(EnsembleKitError, ValueError):
    """A configuration value is unknown, of the wrong type or out of range."""


class DataError(EnsembleKitError, ValueError):
    """The data cannot be used: shapes, labels, non-finite values, empty splits."""


class TrainingError(EnsembleKitError, RuntimeError):
    """Training cannot continue."""


class NonFiniteLossError(TrainingError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""
