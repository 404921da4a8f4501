"""``ensemblekit nes CONFIG.yaml``: EdgeNES and its baselines, a preset (docs/methods.md, edgenes)."""

from __future__ import annotations

from .app import preset_command

nes = preset_command(
    "nes", "configs/nes_mnist1d.yaml",
    "DARTS search, hypernetwork, pool sampling and retraining, ensemble selection; EdgeNES vs NES-RS, DARTS ensembles and the other baselines.",
)
