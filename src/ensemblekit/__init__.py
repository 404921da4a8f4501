"""ensemblekit: deep-network ensembles in PyTorch.

Example:
    >>> import ensemblekit as ek
    >>> data = ek.load_dataset("mnist1d")
    >>> method = ek.create_method("independent", model="cnn1d", members=5, epochs=30).fit(data)
    >>> probs = method.ensemble_.predict_proba(data.test.x)   # (M, B, C)
    >>> ek.evaluate(method.ensemble_, data.test)["accuracy"]
    >>> ek.predict_array(method.ensemble_, data.test.x)["mutual_information"]   # (N,)
    >>> ek.export(method.ensemble_, "ensemble.pt2")   # one graph that runs without ensemblekit
    >>> ek.evaluate_uncertainty(method.ensemble_, data, {"ood": ["noise"], "shift": True})["ood"]["noise"]
"""

from __future__ import annotations

from ._version import __version__
from .data import Data, Split, from_arrays, from_loaders, list_datasets, load_dataset, load_npz, register_dataset
from .ensemble import Ensemble
from .evaluation import EvaluationConfig, evaluate_uncertainty, prepare_data
from .evaluation.predict import predict_array, predict_file
from .errors import ConfigError, DataError, EnsembleKitError, NonFiniteLossError, TrainingError
from .export import export  # the function; the module stays importable as ensemblekit.export (sys.modules)
from .methods import Method, create_method, list_methods, register_method
from .metrics import evaluate_probs
from .evaluation.evaluate import evaluate
from .evaluation.forward import predictive
from .models import create_model, list_models, register_model
from .training import Callback, ParamGroup, RunDir, TrainableModel, TrainConfig, Trainer, schedules
from .threads import configure_threads
from . import curves, nas, varhyper  # method-specific building blocks: ek.curves, ek.nas, ek.varhyper

__all__ = [
    "Data", "Split", "from_arrays", "from_loaders", "list_datasets", "load_dataset", "load_npz", "register_dataset",
    "Ensemble",
    "ConfigError", "DataError", "EnsembleKitError", "NonFiniteLossError", "TrainingError",
    "Method", "create_method", "list_methods", "register_method",
    "evaluate", "evaluate_probs", "predictive", "EvaluationConfig", "evaluate_uncertainty", "prepare_data", "predict_array", "predict_file",
    "export",
    "create_model", "list_models", "register_model",
    "Callback", "ParamGroup", "RunDir", "TrainableModel", "TrainConfig", "Trainer", "schedules",
    "curves", "nas", "varhyper", "configure_threads",
    "__version__",
]
