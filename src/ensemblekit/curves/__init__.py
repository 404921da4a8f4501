"""Mode-connecting curves (Garipov et al. 2018; docs/methods.md, curve_ensemble): Bezier and polygonal-chain
curves between two trained networks, evaluation along ``t``, and curve ensembles.

May import: the base modules, ``data``, ``metrics``, ``training`` and ``ensemble``.
"""

from .endpoints import check_same_architecture, curve_from_ensembles, curve_from_files
from .evaluate import CurveEvaluation, curve_ensemble, curve_points, evaluate_curve, summarize, t_grid, two_model_errors
from .model import CurveModel
from .parametrizations import PARAMETRIZATIONS, bezier, check_parametrization, get_parametrization, polychain

__all__ = [
    "CurveModel", "bezier", "polychain", "PARAMETRIZATIONS", "get_parametrization", "check_parametrization",
    "curve_from_ensembles", "curve_from_files", "check_same_architecture",
    "CurveEvaluation", "curve_points", "evaluate_curve", "two_model_errors", "curve_ensemble", "summarize", "t_grid",
]
