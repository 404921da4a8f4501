"""``compare``'s ``tuning:`` stage: the same number of optuna trials for every method, then its best setting.

Each tuned method has its own study in ``<out>/tuning/<label>/study.db`` (SQLite). A trial is a
cell (:mod:`~ensemblekit.experiments.cells`): the method at ``tuning.budget`` and
``tuning.seed`` with the sampled values set, trained into
``<out>/tuning/<label>/trials/<hash of the values>`` and scored on the validation split. So a
trial is keyed like every cell (its spec, the data and the code), a killed trial resumes from
its checkpoints when its values are asked again, and finished trials are never repeated:
re-running the comparison continues each study until it has ``tuning.trials`` finished trials
(a trial that fails, e.g. diverges, counts as one). The sampler's seed is derived from the
number of trials already in the study, so a resumed study draws what an uninterrupted one
would have drawn next.

The best trial's values make the tuned method (label ``<label> (tuned)``), which the comparison
trains for every budget and seed. The tuning cost (trials, seconds, training FLOPs) is reported
in its own table, never added to the method's budget.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from typing import Any, Callable, Mapping

from ...config import CompareConfig, MethodConfig
from ...data.dataset import Data
from ...errors import ConfigError, EnsembleKitError, TrainingError
from ...evaluation.config import EvaluationConfig
from ...seeding import derive_seed
from ...serialization import write_json
from ..compare import cell_spec, slug
from ...config.tuning import apply_values, method_space, tuned_labels

__all__ = ["TUNED_SUFFIX", "run_tuning", "trial_spec", "objective_value"]

TUNED_SUFFIX = " (tuned)"
_DIRECTION = "minimize"  # val_nll, val_error, val_rmse: lower is better


def objective_value(row: Mapping[str, Any], objective: str) -> float:
    """The trial's score from its row's validation metrics (lower is better)."""
    val = row.get("val")
    if not val:
        raise ConfigError("tuning scores trials on the validation split, and this data has none (set data.val_fraction > 0)")
    if objective == "val_error":
        if "accuracy" not in val:
            raise ConfigError("tuning.objective val_error is for classification; use val_nll or val_rmse")
        return 100.0 * (1.0 - float(val["accuracy"]))
    key = objective[len("val_"):]
    if key not in val:
        raise ConfigError(f"tuning.objective {objective} is not measured for this task (validation has {sorted(val)})")
    return float(val[key])


def trial_spec(cfg: CompareConfig, method: MethodConfig, values: Mapping[str, Any]) -> dict[str, Any]:
    """The cell spec of one trial: ``method`` with ``values`` set, at the tuning budget and seed."""
    tuning = cfg.tuning
    assert tuning is not None
    entry = MethodConfig(**apply_values(method, cfg.train, values))
    seed = tuning.seed if tuning.seed is not None else cfg.seed_list[0]
    split = None if cfg.data.splits is None else 0  # repeated random splits: the trials tune on the first
    spec = cell_spec(cfg, entry, tuning.budget, seed, split, evaluation=EvaluationConfig().model_dump(mode="json"))
    digest = hashlib.sha256(json.dumps(dict(values), sort_keys=True, default=str).encode()).hexdigest()[:12]
    spec["folder"] = os.path.join("tuning", slug(method.display), "trials", digest)
    spec["key"] = f"tune-{slug(method.display)}-{digest}"
    return spec


class _Study:
    """One method's study: its optuna storage, space and trials."""

    def __init__(self, cfg: CompareConfig, method: MethodConfig, out_dir: str, force: bool) -> None:
        import optuna

        self.cfg, self.method, self.tuning = cfg, method, cfg.tuning
        self.folder = os.path.join(out_dir, "tuning", slug(method.display))
        self.space = method_space(method, cfg.train, self.tuning)  # type: ignore[arg-type]
        self.fingerprint = {
            "objective": self.tuning.objective, "sampler": self.tuning.sampler,  # type: ignore[union-attr]
            "space": {k: p.model_dump(mode="json") for k, p in self.space.items()},
            "base": {k: v for k, v in trial_spec(cfg, method, {}).items() if k not in ("key", "folder")},
        }
        if force:
            shutil.rmtree(self.folder, ignore_errors=True)
        os.makedirs(self.folder, exist_ok=True)
        self.storage = optuna.storages.RDBStorage("sqlite:///" + os.path.abspath(os.path.join(self.folder, "study.db")),
                                                  engine_kwargs={"connect_args": {"timeout": 60}})
        self.study = optuna.create_study(storage=self.storage, study_name="tuning", direction=_DIRECTION, load_if_exists=True)
        stored = self.study.user_attrs.get("fingerprint")
        if stored is None:
            self.study.set_user_attr("fingerprint", json.loads(json.dumps(self.fingerprint, default=str)))
        elif stored != json.loads(json.dumps(self.fingerprint, default=str)):
            changed = sorted(k for k in self.fingerprint if stored.get(k) != json.loads(json.dumps(self.fingerprint[k], default=str)))
            raise ConfigError(f"{self.folder}: the tuning of {method.display} was started with a different {', '.join(changed)}; "
                              "use --force to tune it again, or restore the config to continue it")

    def close(self) -> None:
        self.storage.engine.dispose()

    def finished(self) -> list[Any]:
        """Trials that ended on their own: complete, or failed with a recorded error (they count)."""
        from optuna.trial import TrialState

        return [t for t in self.study.get_trials(deepcopy=False)
                if t.state == TrialState.COMPLETE or (t.state == TrialState.FAIL and "error" in t.user_attrs)]

    def recover(self) -> None:
        """Trials a killed process left running, or that Ctrl-C stopped, are failed and their values queued again."""
        from optuna.trial import TrialState

        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            self.study.tell(t.number, state=TrialState.FAIL)
        trials = self.study.get_trials(deepcopy=False)
        retried = {t.user_attrs.get("retry_of") for t in trials}
        for t in trials:
            if t.state == TrialState.FAIL and "error" not in t.user_attrs and t.number not in retried and t.params:
                self.study.enqueue_trial(dict(t.params), user_attrs={"retry_of": t.number})

    def run_trial(self, out_dir: str, data: Data | None, accept_code_change: bool = False) -> dict[str, Any]:
        """Ask one trial, train it as a cell, tell its score; returns its record."""
        import optuna
        from optuna.trial import TrialState

        from ..cells import compare_cell

        n = len(self.study.get_trials(deepcopy=False))
        seed = derive_seed(self.tuning.seed or 0, "tuning", self.method.display, n)  # type: ignore[union-attr]
        self.study.sampler = (optuna.samplers.RandomSampler(seed=seed) if self.tuning.sampler == "random"  # type: ignore[union-attr]
                              else optuna.samplers.TPESampler(seed=seed))
        trial = self.study.ask()
        values = {k: spec.suggest(trial, k) for k, spec in self.space.items()}
        spec = trial_spec(self.cfg, self.method, values)
        trial.set_user_attr("folder", spec["folder"])
        try:
            row = compare_cell(spec, out_dir=out_dir, data=data, report=False, accept_code_change=accept_code_change)
            if "skipped" in row:
                raise TrainingError(row["skipped"])
            value = objective_value(row, self.tuning.objective)  # type: ignore[union-attr]
        except ConfigError:
            trial.set_user_attr("interrupted", "ConfigError")
            self.study.tell(trial, state=TrialState.FAIL)
            raise
        except EnsembleKitError as exc:
            trial.set_user_attr("error", " ".join(str(exc).split()))
            self.study.tell(trial, state=TrialState.FAIL)
            return self.record(self.study.get_trials(deepcopy=False)[trial.number])
        except BaseException as exc:  # Ctrl-C or a bug: not finished; its values are asked again on resume
            trial.set_user_attr("interrupted", type(exc).__name__)
            self.study.tell(trial, state=TrialState.FAIL)
            raise
        trial.set_user_attr("wall_s", float(row.get("wall_s") or 0.0))
        trial.set_user_attr("train_flops", float((row.get("cost") or {}).get("train_flops") or 0.0))
        self.study.tell(trial, value)
        return self.record(self.study.get_trials(deepcopy=False)[trial.number])

    def record(self, t: Any) -> dict[str, Any]:
        params = {k: self.space[k].decode(v) for k, v in t.params.items() if k in self.space}
        return {"method": self.method.display, "number": t.number, "state": t.state.name.lower(), "value": t.value,
                "params": params, "error": t.user_attrs.get("error"), "wall_s": t.user_attrs.get("wall_s"),
                "train_flops": t.user_attrs.get("train_flops"), "folder": t.user_attrs.get("folder")}

    def summary(self) -> dict[str, Any]:
        """The study's result: the best trial's values and the tuning cost."""
        records = [self.record(t) for t in self.finished()]
        done = [r for r in records if r["state"] == "complete"]
        if not done:
            raise TrainingError(f"tuning {self.method.display}: none of its {len(records)} trials finished "
                                f"({'; '.join(sorted({str(r['error']) for r in records}))[:300]})")
        best = min(done, key=lambda r: (r["value"], r["number"]))
        return {"method": self.method.display, "tuned": self.method.display + TUNED_SUFFIX, "objective": self.tuning.objective,  # type: ignore[union-attr]
                "trials": len(records), "failed": len(records) - len(done), "best_value": best["value"], "best_params": best["params"],
                "best_trial": best["number"], "wall_s": sum(r["wall_s"] or 0.0 for r in records),
                "train_flops": sum(r["train_flops"] or 0.0 for r in records), "records": records,
                "space": {k: p.model_dump(mode="json", exclude_none=True) for k, p in self.space.items()}}


def tuned_method(cfg: CompareConfig, method: MethodConfig, summary: Mapping[str, Any]) -> MethodConfig:
    """``method`` with the best trial's values set, labelled ``<label> (tuned)``."""
    entry = apply_values(method, cfg.train, summary["best_params"])
    return MethodConfig(**{**entry, "label": summary["tuned"]})


def run_tuning(cfg: CompareConfig, out_dir: str, data: Data | None, *, force: bool = False, accept_code_change: bool = False,
               on_trial: Callable[[dict[str, Any]], None] | None = None) -> tuple[list[MethodConfig], list[dict[str, Any]]]:
    """Tune every method ``cfg.tuning`` names with the same number of trials (resuming each study).

    Returns:
        The methods of the table (the untuned ones unless ``tuning.untuned`` is off, each tuned
        one after its untuned row) and each tuned method's summary (also ``<out>/tuning.json``).

    Raises:
        ConfigError: a study of ``out_dir`` was started under another space or objective (and
            ``force`` is off), or the data has no validation split.
        TrainingError: no trial of a method finished.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tuning = cfg.tuning
    assert tuning is not None
    if data is not None and data.val is None:
        raise ConfigError("tuning scores trials on the validation split, and this data has none (set data.val_fraction > 0)")
    labels = set(tuned_labels(cfg))
    methods: list[MethodConfig] = []
    summaries: list[dict[str, Any]] = []
    for m in cfg.methods:
        if m.display not in labels:
            methods.append(m)
            continue
        study = _Study(cfg, m, out_dir, force)
        try:
            study.recover()
            while len(study.finished()) < tuning.trials:
                record = study.run_trial(out_dir, data, accept_code_change)
                if on_trial is not None:
                    on_trial({**record, "of": tuning.trials, "done": len(study.finished())})
            summary = study.summary()
        finally:
            study.close()
        summaries.append(summary)
        methods += ([m] if tuning.untuned else []) + [tuned_method(cfg, m, summary)]
    write_json(os.path.join(out_dir, "tuning.json"), summaries)
    return methods, summaries


def trial_line(record: Mapping[str, Any], objective: str) -> str:
    """One progress line of a finished trial."""
    shown = ", ".join(f"{k.split('.')[-1]}={v:.3g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}" for k, v in record["params"].items())
    score = f"{objective} {record['value']:.4g}" if record.get("value") is not None else f"failed: {record.get('error')}"
    return f"tuning {record['method']}: trial {record['done']}/{record['of']} {score} ({shown})"

