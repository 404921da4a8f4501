"""The command line's side of the uncertainty evaluation: an ``evaluation:`` block from ``evaluate``'s flags, and its summary tables."""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

from ..errors import ConfigError

__all__ = ["check_laplace_flags", "fit_run_laplace", "evaluation_from_flags", "regression_uncertainty_tables", "run_held_out_classes", "run_task", "uncertainty_tables"]


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


def run_task(run_dir: str) -> str:
    """``"regression"`` or ``"classification"``: what a run was trained for, from its ``results.json``
    (the ``data`` description, else the keys of its ``test`` metrics), else the readout its
    ``ensemble.safetensors`` records (classification when neither says)."""
    from ..serialization import load_metadata, read_json

    path = os.path.join(run_dir, "results.json")
    if os.path.isfile(path):
        row = read_json(path)
        task = (row.get("data") or {}).get("task") if isinstance(row, dict) else None
        if task in ("regression", "classification"):
            return task
        test = row.get("test") if isinstance(row, dict) else None
        if isinstance(test, dict) and ("rmse" in test or "error" in test):
            return "regression" if "rmse" in test and "error" not in test else "classification"
    path = os.path.join(run_dir, "ensemble.safetensors")
    if os.path.isfile(path):
        meta = load_metadata(path)
        readout = meta.get("readout") if isinstance(meta, dict) else None
        if isinstance(readout, dict) and readout.get("task") == "regression":
            return "regression"
    return "classification"


LAPLACE_STRUCTURES, LAPLACE_PRIORS, LAPLACE_PREDICTIVES = ("full", "kfac", "diag"), ("marglik", "val"), ("probit", "mc")


def check_laplace_flags(path: str, structure: str, prior: str, predictive: str) -> None:
    """``evaluate --laplace``'s flags, and that the run's file holds ordinary networks (a stacked ensemble)."""
    from ..predictors import format_family
    from ..serialization import load_metadata

    for flag, value, valid in (("--laplace", structure, LAPLACE_STRUCTURES), ("--laplace-prior", prior, LAPLACE_PRIORS),
                               ("--laplace-predictive", predictive, LAPLACE_PREDICTIVES)):
        if value not in valid:
            raise ConfigError(f"{flag} must be {' | '.join(valid)}, got {value!r}")
    meta = load_metadata(path)
    family = format_family(meta.get("format") if isinstance(meta, dict) else None)
    if family != "ensemblekit.ensemble":
        raise ConfigError(f"--laplace fits the networks of a run of independently trained members; {path} holds a "
                          f"{family or 'unknown'} predictor")


def fit_run_laplace(ens: Any, ds: Any, structure: str, prior: str, predictive: str, out_dir: str) -> Any:
    """Fit a last-layer Laplace approximation to every network of ``ens`` on ``ds``'s training split, say what
    it cost, save it to ``out_dir/laplace.safetensors`` and return it."""
    import time

    from ..laplace.predictor import fit_laplace
    from ..training.checkpoint import RunDir
    from ..training.flops import count_flops
    from .app import console

    if prior == "val" and ds.val is None:
        raise ConfigError("--laplace-prior val chooses the prior precision on the validation split, and the data has none")
    start = time.perf_counter()
    lap, flops = count_flops(lambda: fit_laplace(ens, ds.train, structure=structure, prior=prior, val=ds.val, predictive=predictive))
    seconds = time.perf_counter() - start
    path = RunDir(out_dir).file("laplace.safetensors")
    lap.save(path)
    console.print(f"Laplace ({structure}, prior {prior}, {predictive}) fitted to {ens.num_members} network(s) in {seconds:.2f} s "
                  f"({flops / 1e9:.3f} GFLOPs); saved to {path}")
    return lap


def evaluation_from_flags(run_dir: str, evaluation_file: str | None, shift: bool, ood: Sequence[str], calibrate: bool,
                          conformal: float | None, selective: bool) -> dict[str, Any] | None:
    """The evaluation block ``evaluate`` runs: ``--evaluation FILE`` (a YAML of the block, or a config with
    ``evaluation:``), then the flags on top; ``None`` when nothing beyond the basic metrics is asked.

    ``--ood held_out`` means the classes the run was trained without; a run trained on every
    class has none (one line, exit 2). For a regression run (:func:`run_task`) ``--calibrate``
    asks for variance scaling and ``--conformal ALPHA`` for normalised conformal intervals: the
    block names no classification scores (THR, APS, RAPS), which a regression evaluation refuses."""
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
    regression = run_task(run_dir) == "regression"
    if shift:
        block.setdefault("shift", {})
    for item in ood:
        for name in (s.strip() for s in item.split(",") if s.strip()):
            if name in ("held_out", "held-out"):
                if not held and regression:
                    raise ConfigError(f"--ood held_out: {run_dir} is a regression run, and regression data has no classes to hold "
                                      "out; use --ood noise|constant|permuted|extrapolation|FILE.npz")
                if not held:
                    raise ConfigError(f"--ood held_out: {run_dir} was trained on every class, so no class is held out; train with "
                                      "evaluation.ood: [{held_out_classes: [...]}] or use --ood noise|constant|permuted|FILE.npz")
                continue
            entry: Any = {"npz": name} if name.endswith(".npz") else name
            block.setdefault("ood", []).append(entry)
    if calibrate:
        block["calibration"] = "temperature"
    if conformal is not None:
        block["conformal"] = {"alpha": conformal} if regression else {"alpha": conformal, "scores": ["thr", "aps", "raps"]}
    block.setdefault("selective", True)
    return block


def _f(v: Any, scale: float = 1.0, digits: int = 2) -> str:
    return "—" if v is None else f"{scale * float(v):.{digits}f}"


def uncertainty_tables(unc: Mapping[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """``(title, header, rows)`` of each part of one evaluation, for a rich table (a regression
    evaluation, ``task: regression``: :func:`regression_uncertainty_tables`)."""
    if unc.get("task") == "regression":
        return regression_uncertainty_tables(unc)
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


def _g(v: Any, digits: int = 4) -> str:
    """A value in the targets' units, to ``digits`` significant digits."""
    return "—" if v is None else f"{float(v):.{digits}g}"


def _interval_row(name: str, m: Mapping[str, Any], extra: str = "—") -> list[str]:
    return [name, _g(m["rmse"]), _f(m["nll"], digits=4), _g(m["crps"]), _f(m.get("picp95"), 100, 1), _g(m.get("mpiw95")),
            _f(m.get("quantile_calibration_error"), digits=3), extra]


def regression_uncertainty_tables(unc: Mapping[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """``(title, header, rows)`` of each part of one regression evaluation (``evaluation/regression_run.py``):
    variance scaling, selective regression (MSE risk), OOD detection by the predicted stds, the
    tabular shift suite and the conformal intervals; values in the targets' units."""
    out = []
    cal = unc.get("calibration")
    if cal:
        header = ["", "RMSE", "NLL", "CRPS", "PICP95 %", "MPIW95", "quantile cal. error", ""]
        v, p = cal["variance_scaled"], cal["scale_then_pool"]
        scales = p.get("scales") or []
        rows = [_interval_row("raw", cal["raw"]),
                _interval_row("pool, then variance scale", v, f"c = {v['scale']:.3g}"),
                _interval_row("variance scale per member, then pool", p,
                              "c = " + ", ".join(f"{c:.3g}" for c in scales[:6]) + (" ..." if len(scales) > 6 else ""))]
        out.append(("variance scaling on the test split (fitted on validation)", header, rows))
    sel = unc.get("selective")
    if sel:
        rows = [[k, _g(v["aurc"]), _g(v["e_aurc"]), _g(v.get("oracle_aurc")), _g(v.get("random_aurc")), _g(v.get("rmse@0.8"))]
                for k, v in sel["scores"].items()]
        out.append(("selective regression (keep the lowest predicted std first; risk = MSE of the kept)",
                    ["score", "AURC", "E-AURC", "oracle AURC", "random AURC", "RMSE at 80% coverage"], rows))
    for name, res in (unc.get("ood") or {}).items():
        rows = [[k, _f(v["auroc"], 100, 1), _f(v["aupr_in"], 100, 1), _f(v["aupr_out"], 100, 1), _f(v["fpr95"], 100, 1)]
                for k, v in res["scores"].items()]
        what = (f"{res['size']} test examples beyond the training range of feature {res['feature']}"
                if "feature" in res else f"{res['size']} {name}")
        out.append((f"OOD detection: {res['in_size']} test vs {what}", ["score", "AUROC %", "AUPR-in %", "AUPR-out %", "FPR@95 %"], rows))
    sh = unc.get("shift")
    if sh:
        sev = sh["by_severity"]

        def cells(m: Mapping[str, Any]) -> list[str]:
            return [_g(m.get("rmse")), _f(m.get("nll"), digits=3), _g(m.get("crps")), _f(m.get("picp95"), 100, 1), _g(m.get("mean_std"))]

        rows = [["clean", *cells(sh["clean"])]]
        rows += [[str(s), *cells({k: v[i] for k, v in sev.items() if k != "severity"})] for i, s in enumerate(sev["severity"])]
        out.append((f"shift: mean over {len(sh['corruptions'])} corruptions", ["severity", "RMSE", "NLL", "CRPS", "PICP95 %", "mean std"], rows))
    conf = unc.get("conformal")
    if conf:
        n, mix = conf["normalized"], conf["mixture_interval"]
        qhat = n["qhat"]
        q = ", ".join(_g(x, 3) for x in qhat) if isinstance(qhat, list) else _g(qhat, 3)
        rows = [["normalized conformal |y − μ| / σ", _f(n["coverage"], 100, 1), _g(n["mean_width"]), f"q̂ = {q}"],
                ["the mixture's own central interval", _f(mix["coverage"], 100, 1), _g(mix["mean_width"]), "—"]]
        alpha = n["alpha"]
        out.append((f"conformal intervals, alpha = {alpha} (target coverage {100 * (1 - alpha):.0f}%)",
                    ["interval", "coverage %", "mean width", ""], rows))
    return out
