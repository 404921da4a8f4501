"""Neural architecture search: the DARTS space (1-D and 2-D), first-order DARTS, EdgeNES's
hypernetwork over architectures, ensemble selection from a pool (docs/methods.md, edgenes).

The search loops live in :mod:`ensemblekit.nas.search` (not imported here: importing the
package for its search space should not load the training engine).

May import: the base modules, ``data``, ``models``, ``training`` and ``ensemble``.
"""

from .genotype import DARTS_V2, Genotype, common_edges, derive_genotype, perturb_genotype, random_genotype
from .hypernet import ArchHypernet
from .network import darts
from .select import ensemble_nll, exhaustive_select, forward_select, select_ensemble
from .supernet import SearchNetwork

__all__ = [
    "DARTS_V2", "Genotype", "common_edges", "derive_genotype", "perturb_genotype", "random_genotype", "ArchHypernet", "darts",
    "ensemble_nll", "exhaustive_select", "forward_select",
    "select_ensemble", "SearchNetwork",
]
