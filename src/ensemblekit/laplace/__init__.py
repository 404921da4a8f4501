"""Laplace approximations: a Gaussian posterior over each trained member's final layer.

MacKay, "A Practical Bayesian Framework for Backpropagation Networks", Neural Computation
1992; Ritter, Botev & Barber, "A Scalable Laplace Approximation for Neural Networks", ICLR
2018 (KFAC); Kristiadi, Hein & Hennig, "Being Bayesian, Even Just a Bit, Fixes
Overconfidence in ReLU Networks", ICML 2020 (last layer); Daxberger et al., "Laplace Redux —
Effortless Bayesian Deep Learning", NeurIPS 2021; Immer, Korzepa & Bauer, "Improving
predictions of Bayesian neural nets via local linearization", AISTATS 2021 (GLM predictive);
Eschenhagen et al., "Mixtures of Laplace Approximations for Improved Post-Hoc Uncertainty in
Deep Learning", 2021 (Laplace ensembles). Implemented with torch alone.

Owns: the last-layer curvature (:mod:`.curvature`: GGN ``full``, ``kfac``, ``diag``), the
posterior with its evidence, prior selection, function variance and weight draws
(:mod:`.posterior`), the probit-adjusted final layer (:mod:`.probit`), the per-member
fitting pass (:mod:`.fitting`) and the predictor kind :class:`~ensemblekit.laplace.predictor.Laplace`
with :func:`~ensemblekit.laplace.predictor.fit_laplace` (:mod:`.predictor`; it owns its file
``ensemblekit.laplace/1`` and its export). The registry of predictor kinds imports this
package's modules when a lookup misses, so this package imports nothing at import time and
nothing imports it to register the kind.

May import: the base modules (``errors``, ``registry``, ``serialization``, ``predictors``...),
``data``, ``metrics``, ``evaluation``, ``models``, ``training`` and ``ensemble``; never
``efficient``, ``nas``, ``varhyper``, ``curves``, ``distance``, ``export`` or anything above it.
"""

__all__ = ["curvature", "fitting", "posterior", "predictor", "probit"]
