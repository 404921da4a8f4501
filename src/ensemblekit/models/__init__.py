"""Models: the model and wrapper registries, model specs that survive a save/load, and the built-in zoo.

Owns: :data:`MODELS` and :data:`WRAPPERS` (:mod:`.registry`: ``create_model``, ``model_factory``,
specs), the zoo (:mod:`.simple`: mlp, cnn1d; :mod:`.cnn2d`, :mod:`.resnet`, :mod:`.vgg`,
:mod:`.wrn`), the wrappers of this package (:mod:`.dropconnect`, :mod:`.frozen_head`) and
the shared layers (:mod:`.layers`, :mod:`.base`). Every model and wrapper registers itself
where it is defined; the registries import the modules of ``models``, ``nas`` (``darts``)
and ``efficient`` (``packed``, ``head_dropout``) on a lookup that misses, so nothing is
imported here only to register it.

May import: the base modules (``errors``, ``registry``...) only.
"""

from .base import Classifier
from .registry import MODELS, WRAPPERS, ModelFactory, create_model, list_models, list_wrappers, model_factory, register_model, register_wrapper

__all__ = ["Classifier", "MODELS", "WRAPPERS", "ModelFactory", "create_model", "list_models", "list_wrappers", "model_factory",
           "register_model", "register_wrapper"]
