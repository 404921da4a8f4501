"""Model registry and the built-in model zoo."""

from . import simple  # noqa: F401  (registers mlp, cnn1d)
from . import cnn2d  # noqa: F401  (registers cnn2d)
from . import resnet  # noqa: F401  (registers resnet)
from . import vgg  # noqa: F401  (registers vgg)
from . import wrn  # noqa: F401  (registers wrn)
from ..nas import network as _darts  # noqa: F401  (registers darts)
from . import dropconnect, frozen_head  # noqa: F401  (register the dropconnect and frozen_head wrappers)
from ..efficient import mcdropout as _mcdropout, packed as _packed  # noqa: F401  (register head_dropout, packed)
from .base import Classifier
from .registry import MODELS, WRAPPERS, ModelFactory, create_model, list_models, list_wrappers, model_factory, register_model, register_wrapper

__all__ = ["Classifier", "MODELS", "WRAPPERS", "ModelFactory", "create_model", "list_models", "list_wrappers", "model_factory",
           "register_model", "register_wrapper"]
