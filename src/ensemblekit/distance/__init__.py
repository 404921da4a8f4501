"""Distance-aware uncertainty from one deterministic network: the pieces of SNGP and DDU.

SNGP: Liu et al., "Simple and Principled Uncertainty Estimation with Deterministic Deep
Learning via Distance Awareness", NeurIPS 2020. DDU: Mukhoti et al., "Deep Deterministic
Uncertainty: A New Simple Baseline", CVPR 2023. Both make the hidden layers roughly
distance preserving with a bound on their spectral norms (Miyato et al., "Spectral
Normalization for Generative Adversarial Networks", ICLR 2018), then read the uncertainty
off the distance of an input's features to the training features: SNGP through a
random-feature Gaussian-process output layer (Rahimi & Recht, "Random Features for
Large-Scale Kernel Machines", NeurIPS 2007), DDU through a Gaussian density fitted to the
penultimate features.

Owns: the ``spectral_norm`` model wrapper and its parametrisation (:mod:`.spectral`), the
``gp_head`` model wrapper, its layer and the post-training covariance pass (:mod:`.gp`),
the class-conditional Gaussian density and the ``DDU`` predictor kind, which owns its file
and its export (:mod:`.ddu`), and what both passes share: a member's layer activations
read from a stacked ensemble (:mod:`.members`). An SNGP ensemble is an ordinary
:class:`~ensemblekit.ensemble.Ensemble` (its file, export and evaluation are the
Ensemble's). The methods that train them live in :mod:`ensemblekit.methods`. The
registries that hold these entries import this package's modules when a lookup misses,
so this package imports nothing at import time and nothing imports it to register them.

May import: the base modules (``errors``, ``registry``, ``serialization``, ``predictors``,
``seeding``, ``hashing``), ``data``, ``metrics``, ``evaluation``, ``models``, ``training``
and ``ensemble``; never ``efficient``, ``nas``, ``varhyper``, ``curves``, ``laplace``,
``export`` or anything above it.
"""

__all__ = ["ddu", "gp", "members", "spectral"]
