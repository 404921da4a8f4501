"""Ensemble methods: one module each, one registry, one surface.

Owns: :data:`METHODS` and the :class:`Method` surface (:mod:`.base`), one module per
method (each registers itself with :func:`register_method` where it is defined; the
registry imports every module of this package on a lookup that misses, so nothing is
imported here only to register it), and the bases a few methods share (:mod:`.one_network`,
:mod:`.nas`, :mod:`.varhyper`, :mod:`.collect`).

May import: everything below ``config``: the base modules, ``data``, ``metrics``,
``evaluation``, ``models``, ``training``, the kinds (``ensemble``, ``efficient``, ``nas``,
``varhyper``, ``curves``), ``export`` and ``report``; never ``config``, ``experiments`` or ``cli``.
"""

from .base import METHODS, Method, create_method, list_methods, register_method

__all__ = ["METHODS", "Method", "create_method", "list_methods", "register_method"]
