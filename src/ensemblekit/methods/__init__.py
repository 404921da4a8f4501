"""Ensemble methods: one module each, one registry, one surface."""

from . import (  # noqa: F401  (registers)
    batchensemble, boosting, curves, edgenes, fge, independent, masksembles, mcdropout, mimo, nas_baselines, packed, snapshot, swa, swag,
    variational, varhyper,
)
from .base import METHODS, Method, create_method, list_methods, register_method

__all__ = ["METHODS", "Method", "create_method", "list_methods", "register_method"]
