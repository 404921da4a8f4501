"""The command line's side of the uncertainty evaluation: an ``evaluation:`` block from ``evaluate``'s flags, and its summary tables."""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

from ..errors import ConfigError

__all__ = ["evaluation_from_flags", "run_held_out_classes", "uncertainty_tables"]


def run_held_out_classes(run_dir: str) -> list[int] | None:
    """The classes a run was trained without (from its ``results.json``, else its ``config.yaml``)."""
    from ..schema import load_yaml
    from ..serialization import read_json

    path = os.path.join(run_dir, "results.json")
    if os.path.isfile(path):
        classes = ((read_json(path).get("data") or {}).get("info") or {}).get("held_out_classes")
        if classes:
            return [int(c) for c in classes]
    cfg = os.path.join(run_dir, "config.yaml")
    if os.path.isfile(cfg):
        for spec in ((load_yaml(cfg).get("evaluation") or {}).get("ood") or []):
            if isinstance(spec, dict) and spec.get("held_out_classes"):
                return sorted(int(c) for c in spec["held_out_classes"])
    return None


def evaluation_from_flags(run_dir: str, evaluation_file: str | None, shift: bool, ood: Sequence[str], calibrate: bool,
                          conformal: float | None, selective: bool) -> dict[str, Any] | None:
    """The evaluation block ``evaluate`` runs: ``--evaluation FILE`` (a YAML of the block, or a config with
    ``evaluation:``), then the flags on top; ``None`` when nothing beyond the basic metrics is asked.

    ``--ood held_out`` means the classes the run was trained without; a run trained on every
    class has none (one line, exit 2)."""
    from ..schema import load_yaml

    block: dict[str, Any] = {}
    if evaluation_file:
        raw = load_yaml(evaluation_file)
        block = dict(raw.get("evaluation", raw) or {})
    held = run_held_out_classes(run_dir)
    if held:  # the run's model knows only the other classes: the data must be prepared the same way
        block["ood"] = [s for s in (block.get("ood") or []) if not (isinstance(s, dict) and "held_out_classes" in s)]
        block["ood"].insert(0, {"held_out_classes": held})
    asked = bool(evaluation_file) or shift or bool(ood) or calibrate or conformal is not None or selective
    if not asked:
        return block or None
    if shift:
        block.setdefault("shift", {})
    for item in ood:
        for name in (s.strip() for s in item.split(",") if s.strip()):
            if name in ("held_out", "held-out"):
                if not held:
                    raise ConfigError(f"--ood held_out: {run_dir} was trained on every class, so no class is held out; train with "
                                      "evaluation.ood: [{held_out_classes: [...]}] or use --ood noise|constant|permuted|FILE.npz")
                continue
            entry: Any = {"npz": name} if name.endswith(".npz") else name
            block.setdefault("ood", []).append(entry)
    if calibrate:
        block["calibration"] = "temperature"
    if conformal is not None:
        block["conformal"] = {"alpha": conformal, "scores": ["thr", "aps", "raps"]}
    block.setdefault("selective", True)
    return block


def _f(v: Any, scale: float = 1.0, digits: int = 2) -> str:
    return "—" if v is None else f"{scale * float(v):.{digits}f}"


def uncertainty_tables(unc: Mapping[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """``(title, header, rows)`` of each part of one evaluation, for a rich table."""
    out = []
    cal = unc.get("calibration")
    if cal:
        rows = [["raw", _f(cal["raw"]["nll"], digits=4), _f(cal["raw"]["ece"], 100), _f(cal["raw"]["error"]), "—"]]
        p = cal["pool_then_calibrate"]
        rows.append(["pool, then temperature", _f(p["nll"], digits=4), _f(p["ece"], 100), _f(p["error"]), f"T = {p['temperature']:.3f}"])
        c = cal["calibrate_then_pool"]
        rows.append(["temperature per member, then pool", _f(c["nll"], digits=4), _f(c["ece"], 100), _f(c["error"]),
                     "T = " + ", ".join(f"{t:.2f}" for t in c["temperatures"][:6]) + (" ..." if len(c["temperatures"]) > 6 else "")])
        if cal.get("vector"):
            v = cal["vector"]
            rows.append(["vector scaling", _f(v["nll"], digits=4), _f(v["ece"], 100), _f(v["error"]), "—"])
        out.append(("calibration on the test split (fitted on validation)", ["", "NLL", "ECE %", "error %", ""], rows))
    sel = unc.get("selective")
    if sel:
        rows = [[k, _f(v["aurc"], 100), _f(v["augrc"], 100), _f(v["e_aurc"], 100), _f(v.get("risk@0.8"), 100)] for k, v in sel["scores"].items()]
        out.append(("selective prediction (confidence = minus each score)", ["score", "AURC %", "AUGRC %", "E-AURC %", "risk % at 80% coverage"], rows))
    for name, res in (unc.get("ood") or {}).items():
        rows = [[k, _f(v["auroc"], 100, 1), _f(v["aupr_in"], 100, 1), _f(v["aupr_out"], 100, 1), _f(v["fpr95"], 100, 1)]
                for k, v in res["scores"].items()]
        out.append((f"OOD detection: {res['in_size']} test vs {res['size']} {name}", ["score", "AUROC %", "AUPR-in %", "AUPR-out %", "FPR@95 %"], rows))
    sh = unc.get("shift")
    if sh:
        sev = sh["by_severity"]
        rows = [["clean", _f(sh["clean"]["accuracy"], 100), _f(sh["clean"]["ece"], 100), _f(sh["clean"]["nll"], digits=3)]]
        rows += [[str(s), _f(sev["accuracy"][i], 100), _f(sev["ece"][i], 100), _f(sev["nll"][i], digits=3)] for i, s in enumerate(sev["severity"])]
        out.append((f"shift: mean over {len(sh['corruptions'])} corruptions", ["severity", "accuracy %", "ECE %", "NLL"], rows))
    conf = unc.get("conformal")
    if conf:
        rows = [[k, _f(v["coverage"], 100, 1), _f(v["mean_size"]), _f(v["empty_fraction"], 100, 1)] for k, v in conf.items()]
        alpha = next(iter(conf.values()))["alpha"]
        out.append((f"conformal sets, alpha = {alpha} (target coverage {100 * (1 - alpha):.0f}%)", ["score", "coverage %", "mean size", "empty %"], rows))
    return out
