"""``ensemblekit varhyper CONFIG.yaml``: a variational hypernetwork family vs per-lambda baselines, a preset (docs/methods.md, varhyper)."""

from __future__ import annotations

from .app import preset_command

varhyper = preset_command(
    "varhyper", "configs/varhyper_digits.yaml",
    "Train hypernetworks over lambda and separate variational / L2 nets per lambda; prune; tables and plots.",
)
