"""``ensemblekit curve CONFIG.yaml``: mode-connecting curves between two networks, a preset (docs/methods.md, curve_ensemble)."""

from __future__ import annotations

from .app import preset_command

curve = preset_command(
    "curve", "configs/curve_mnist1d.yaml",
    "Train (or load) two endpoints, fit Bezier / polychain curves between them, evaluate along t, write tables and plots.",
)
