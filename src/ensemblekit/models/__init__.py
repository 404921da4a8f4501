"""Model registry and the built-in model zoo."""

from . import simple  # noqa: F401  (registers mlp, cnn1d)
from . import cnn2d  # noqa: F401  (registers cnn2d)
from . import resnet  # noqa: F401  (registers resnet)
from . import vgg  # noqa: F401  (registers vgg)
from . import wrn  # noqa: F401  (registers wrn)
from ..nas import network as _darts  # noqa: F401  (registers darts)
from .base import Classifier
from .registry import MODELS, ModelFactory, create_model, list_models, model_factory, register_model

__all__ = ["Classifier", "MODELS", "ModelFactory", "create_model", "list_models", "model_factory", "register_model"]
