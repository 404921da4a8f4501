"""Reports: PNG figures and Markdown tables of results."""

from __future__ import annotations

from .plots import line_plot, reliability_diagram, size_curve_plot, training_curves
from .tables import comparison_markdown, markdown_table, mean_std

__all__ = ["reliability_diagram", "size_curve_plot", "line_plot", "training_curves", "comparison_markdown", "markdown_table", "mean_std"]
