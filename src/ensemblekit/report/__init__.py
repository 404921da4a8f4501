"""Reports: Markdown tables, PNG figures and report.html, from results rows.

Owns: tables (:mod:`.tables`, :mod:`.uncertainty_tables`), plots (:mod:`.plots`,
:mod:`.uncertainty_plots`, :mod:`.pareto`, and the families' own figures), :mod:`.html`.

May import: the base modules, ``data``, ``metrics``, ``evaluation`` and ``curves``; never
``methods``, ``experiments`` or ``cli`` (a method's report hook calls into here, not back).
"""

from __future__ import annotations

from .plots import line_plot, reliability_diagram, size_curve_plot, training_curves
from .tables import comparison_markdown, markdown_table, mean_std

__all__ = ["reliability_diagram", "size_curve_plot", "line_plot", "training_curves", "comparison_markdown", "markdown_table", "mean_std"]
