"""Ensemble methods: one module each, one registry, one surface."""

from . import boosting, curves, edgenes, fge, independent, nas_baselines, snapshot, swa, variational, varhyper  # noqa: F401  (registers)
from .base import METHODS, Method, create_method, list_methods, register_method

__all__ = ["METHODS", "Method", "create_method", "list_methods", "register_method"]
