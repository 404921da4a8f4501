"""Hyperparameter search over a training config (optuna): samplers, pruning, coarse-to-fine, resume.

A *trial* sets sampled values at dotted paths of a base :class:`~ensemblekit.config.RunConfig`
(the keys ``--set`` takes), trains it with :func:`~ensemblekit.experiments.run.run_training`
into ``<out>/trials/<n>`` and is scored by the ensemble's validation metric. The per-epoch
validation curve is reported to optuna, so a median pruner can stop hopeless trials early
(the usual recipe: coarse search over a few epochs, refine, watch the curves; docs/methods.md, the training toolkit).

The study lives in ``<out>/study.db`` (SQLite): re-running the same search continues it.
Finished trials (complete, pruned, failed) are never repeated; a trial that was running when
the process died is marked failed and its parameters are queued again.

Example:
    >>> from ensemblekit.config import load_config
    >>> from ensemblekit.experiments.tune import TuneConfig, run_tune
    >>> cfg = load_config("tune.yaml", TuneConfig, ["search.trials=20"])
    >>> best = run_tune(cfg)
    >>> best["value"], best["params"], best["config_path"]
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Mapping, Sequence

import optuna
import yaml
from optuna.trial import TrialState
from pydantic import ValidationError

from ...config import RunConfig, set_paths
from ...data.dataset import Data
from ...data.registry import DATASETS
from ...errors import ConfigError, EnsembleKitError, TrainingError
from ...schema import format_validation_error
from ...seeding import derive_seed
from ...training.callbacks import Callback
from ..backends import Backend, LocalBackend
from ..run import run_training
from .config import METRIC_KEY, ParamSpec, TuneConfig, was_interrupted, name_of, raw_base
from .optuna_glue import TrialReporter, make_sampler
from .space import refine_space
from .report import best_record, trial_record, format_trial, write_report

__all__ = ["TrialReporter", "run_tune", "tune_trial"]  # TrialReporter re-exported from .optuna_glue


def _builder_default(full: Mapping[str, Any], path: str) -> Any:
    """A value the config leaves to a default: a registered model's argument or a dataset option."""
    import inspect

    from ...models.registry import MODELS

    parts = path.split(".")
    fn = None
    if parts[:2] == ["model", "kwargs"] and len(parts) == 3 and full.get("model", {}).get("name"):
        fn, key = MODELS.get(full["model"]["name"]), parts[2]
    elif parts[0] == "data" and len(parts) == 2 and full.get("data", {}).get("name"):
        fn, key = DATASETS.get(full["data"]["name"]), parts[1]
    elif parts[:2] == ["data", "options"] and len(parts) == 3 and full.get("data", {}).get("name"):
        fn, key = DATASETS.get(full["data"]["name"]), parts[2]
    if fn is None:
        return None
    param = inspect.signature(fn).parameters.get(key)
    return None if param is None or param.default is inspect.Parameter.empty else param.default


def _baseline_params(space: Mapping[str, ParamSpec], full: Mapping[str, Any]) -> dict[str, Any] | None:
    """The base config's values at the searched paths (stored form), or None if any lies outside the space."""
    out = {}
    for path, spec in space.items():
        node: Any = full
        for part in path.split("."):
            if not isinstance(node, Mapping) or part not in node:
                node = _builder_default(full, path)
                break
            node = node[part]
        ok, stored = spec.encode_if_valid(node)
        if not ok:
            return None
        out[path] = stored
    return out


class _Search:
    """The state one ``run_tune`` call shares between stages and worker threads."""

    def __init__(self, cfg: TuneConfig, out: str, data: Data | None, callbacks: Sequence[Callback], progress: Callable[[dict[str, Any]], None] | None,
                 backend: Backend | None = None) -> None:
        self.cfg, self.out, self.data, self.callbacks, self.progress = cfg, out, data, list(callbacks), progress
        self.backend = None if backend is None or isinstance(backend, LocalBackend) else backend
        self.raw, self.full = raw_base(cfg.base)
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.storage = optuna.storages.RDBStorage(
            "sqlite:///" + os.path.abspath(os.path.join(out, "study.db")),
            engine_kwargs={"connect_args": {"timeout": 60}},
        )

    def trial_dir(self, stage: str, number: int) -> str:
        return os.path.join(self.out, "trials", str(number) if stage == "coarse" else f"{stage}-{number}")

    def open_study(self, stage: str, fingerprint: dict[str, Any]) -> optuna.Study:
        name = self.cfg.name if stage == "coarse" else f"{self.cfg.name}-{stage}"
        search = self.cfg.search
        pruner = (optuna.pruners.MedianPruner(n_startup_trials=search.prune.startup_trials, n_warmup_steps=search.prune.warmup_epochs)
                  if search.prune.enabled else optuna.pruners.NopPruner())
        study = optuna.create_study(storage=self.storage, study_name=name, direction=search.direction, load_if_exists=True, pruner=pruner)  # type: ignore[arg-type]
        stored = study.user_attrs.get("search")
        if stored is None:
            study.set_user_attr("search", fingerprint)
        elif stored != fingerprint:
            changed = sorted(k for k in set(stored) | set(fingerprint) if stored.get(k) != fingerprint.get(k))
            raise ConfigError(
                f"{self.out}/study.db: study {name!r} was started with a different {', '.join(changed)}; "
                "give another --out (or name) to start a new search, or restore the config to continue this one"
            )
        return study

    def recover(self, study: optuna.Study, stage: str) -> None:
        """Mark trials a killed process left running as failed and queue their parameters again."""
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            study.tell(t.number, state=TrialState.FAIL)
        trials = study.get_trials(deepcopy=False)
        retried = {t.user_attrs.get("retry_of") for t in trials}
        for t in trials:
            if was_interrupted(t) and t.number not in retried:
                shutil.rmtree(self.trial_dir(stage, t.number), ignore_errors=True)
                if t.params:
                    study.enqueue_trial(dict(t.params), user_attrs={"retry_of": t.number})

    def run_stage(self, stage: str, space: dict[str, ParamSpec], fixed: dict[str, Any], n_trials: int, sampler: str) -> optuna.Study:
        fingerprint = {
            "metric": self.cfg.search.metric,
            "sampler": sampler,
            "params": {k: p.model_dump(mode="json") for k, p in space.items()},
            "fixed": yaml.safe_load(yaml.safe_dump(fixed)),
            "base": _fingerprint_base(self.cfg.base),
        }
        study = self.open_study(stage, fingerprint)
        self.recover(study, stage)
        trials = study.get_trials(deepcopy=False)
        if stage == "coarse" and not trials and self.cfg.search.baseline and sampler != "grid":
            baseline = _baseline_params(space, self.full)
            if baseline is not None:
                study.enqueue_trial(baseline, user_attrs={"baseline": True})
        remaining = n_trials - sum(1 for t in trials if t.state.is_finished() and not was_interrupted(t))
        if remaining <= 0:
            return study
        # A resumed random/TPE search must not replay its first draws: seed by how many trials
        # exist. The grid sampler's seed shuffles the grid ids, so it must stay the same.
        salt = len(trials) if sampler != "grid" else "grid"
        study.sampler = make_sampler(sampler, space, derive_seed(self.cfg.base.seed, "tune", stage, salt))
        left = [remaining]

        def claim() -> bool:
            with self.lock:
                if left[0] <= 0 or self.stop.is_set():
                    return False
                left[0] -= 1
                return True

        def worker() -> None:
            while claim():
                try:
                    self.run_trial(study, stage, space, fixed)
                except BaseException:
                    self.stop.set()
                    raise

        if self.backend is not None:
            self.run_units(study, stage, space, fixed, fingerprint, sampler, salt, claim)
            return study
        if self.cfg.search.n_jobs == 1:
            worker()
            return study
        # queued trials (the baseline, retries) first, one at a time: two threads asking
        # SQLite-backed optuna for the same waiting trial race
        while study.get_trials(deepcopy=False, states=(TrialState.WAITING,)) and claim():
            self.run_trial(study, stage, space, fixed)
        with ThreadPoolExecutor(self.cfg.search.n_jobs, thread_name_prefix="tune") as pool:
            futures = [pool.submit(worker) for _ in range(self.cfg.search.n_jobs)]
            try:
                for f in futures:
                    f.exception()
            except KeyboardInterrupt:
                self.stop.set()  # the workers abort their trials at the next iteration
                for f in futures:
                    f.exception()
                raise
        errors = [f.exception() for f in futures if f.exception() is not None]
        if errors:  # the first real error rather than the interruptions it caused in the other workers
            raise sorted(errors, key=lambda e: isinstance(e, KeyboardInterrupt))[0]
        return study

    def run_units(self, study: optuna.Study, stage: str, space: Mapping[str, ParamSpec], fixed: Mapping[str, Any],
                  fingerprint: dict[str, Any], sampler: str, salt: Any, claim: Callable[[], bool]) -> None:
        """Run the stage's trials as independent units on ``self.backend``, sharing ``study.db``."""
        base = {"stage": stage, "study": study.study_name, "fingerprint": fingerprint, "sampler": sampler,
                "space": {k: p.model_dump(mode="json") for k, p in space.items()}, "fixed": dict(fixed)}
        slots = []
        while claim():
            i = len(slots)
            # distinct sampler seeds, or parallel random/TPE units would draw the same values
            slots.append({**base, "key": f"{stage}-{salt}-{i}", "seed": derive_seed(self.cfg.base.seed, "tune", stage, salt, i if sampler != "grid" else 0)})
        context = {"cfg": self.cfg, "out": self.out, "data": self.data, "callbacks": self.callbacks}

        def done(spec: Mapping[str, Any], outcome: Any) -> None:
            if outcome.ok and self.progress is not None:
                self.progress(outcome.value)
            elif not outcome.ok:
                print(f"tune: {spec['key']}: {outcome.error}", file=sys.stderr, flush=True)

        # queued trials (the baseline, retries) one at a time: units asking SQLite-backed optuna
        # for the same waiting trial race
        while slots and study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            self.backend.map(tune_trial, [slots.pop(0)], context=context, on_done=done)  # type: ignore[union-attr]
        self.backend.map(tune_trial, slots, context=context, on_done=done)  # type: ignore[union-attr]

    def run_trial(self, study: optuna.Study, stage: str, space: Mapping[str, ParamSpec], fixed: Mapping[str, Any], slot: str | None = None) -> int:
        """Ask for a trial (or take over ``slot``'s, left running by a dead worker), train it, tell; returns its number."""
        left = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) if slot is not None and t.user_attrs.get("slot") == slot]
        trial = optuna.trial.Trial(study, left[0]._trial_id) if left else study.ask()
        run_dir = self.trial_dir(stage, trial.number)
        trial.set_user_attr("dir", os.path.relpath(run_dir, self.out))
        if slot is not None:
            trial.set_user_attr("slot", slot)
        params = {k: spec.suggest(trial, k) for k, spec in space.items()}
        if os.path.exists(run_dir) and not left:  # left over from a study.db that was deleted: not this trial's
            shutil.rmtree(run_dir)
        reporter = TrialReporter(trial, self.cfg.search.metric, self.cfg.search.prune.enabled, self.stop if self.cfg.search.n_jobs > 1 else None)
        try:
            run_cfg = RunConfig(**set_paths(self.raw, {**fixed, **params}, self.full))
            results = run_training(run_cfg, run_dir, resume=bool(left), data=self.data, callbacks=[reporter, *self.callbacks], plots=False)
            value = float(results["val"][METRIC_KEY[self.cfg.search.metric]])
            if not math.isfinite(value):
                raise TrainingError(f"the validation {self.cfg.search.metric} is {value}")
        except optuna.TrialPruned:
            study.tell(trial, state=TrialState.PRUNED)
        except (EnsembleKitError, ValidationError) as exc:
            msg = format_validation_error(exc, root=RunConfig) if isinstance(exc, ValidationError) else str(exc)
            trial.set_user_attr("error", " ".join(msg.split()))
            study.tell(trial, state=TrialState.FAIL)
        except BaseException as exc:  # Ctrl-C or a bug: the trial did not finish; it is retried on resume
            trial.set_user_attr("interrupted", type(exc).__name__)
            study.tell(trial, state=TrialState.FAIL)
            raise
        else:
            study.tell(trial, value)
        if self.progress is not None:
            record = trial_record(study.get_trials(deepcopy=False)[trial.number], stage, self.cfg.search.params, fixed)
            with self.lock:
                self.progress(record)
        return trial.number


def tune_trial(spec: Mapping[str, Any], *, cfg: TuneConfig, out: str, data: Data | None, callbacks: Sequence[Callback] = ()) -> dict[str, Any]:
    """The unit of work of a distributed search: one trial of ``spec["stage"]``, told to the shared study.

    A unit whose worker died is started again with the same ``spec["key"]``; it takes over the
    trial the dead worker left running and resumes its run directory from the checkpoints.
    Returns the trial's record (see :func:`run_tune`).
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ctx = _Search(cfg, out, data, callbacks, None)
    try:
        space = {k: ParamSpec(**v) for k, v in spec["space"].items()}
        study = ctx.open_study(spec["stage"], spec["fingerprint"])
        study.sampler = make_sampler(spec["sampler"], space, int(spec["seed"]))
        number = ctx.run_trial(study, spec["stage"], space, spec["fixed"], slot=str(spec["key"]))
        return trial_record(study.get_trials(deepcopy=False)[number], spec["stage"], cfg.search.params, spec["fixed"])
    finally:
        ctx.storage.engine.dispose()



def _fingerprint_base(base: RunConfig) -> dict[str, Any]:
    """What the user set in base (not defaults, so a new field in a later version still resumes)."""
    d = base.model_dump(mode="json", exclude_unset=True, fallback=name_of)
    for key in ("progress", "device"):  # how a trial is shown or placed, not what it computes
        d.get("train", {}).pop(key, None)
    for key in ("out", "name"):
        d.pop(key, None)
    return yaml.safe_load(yaml.safe_dump(d))


def run_tune(
    cfg: TuneConfig,
    out_dir: str | None = None,
    *,
    progress: bool | Callable[[dict[str, Any]], None] | None = None,
    data: Data | None = None,
    callbacks: Sequence[Callback] = (),
    backend: Backend | None = None,
) -> dict[str, Any]:
    """Run (or continue) the search of ``cfg`` and write its report into ``out_dir``.

    Args:
        cfg: a validated :class:`TuneConfig`.
        out_dir: output folder (default ``cfg.out``); holds ``study.db``, ``trials/<n>``
            (``trials/refine-<n>`` for the refine stage), ``trials.csv``, ``trials.md``,
            ``best.yaml``, ``best.json`` and ``objective_vs_params.png``.
        progress: a callable receiving each finished trial's record, ``True`` to print one
            line per trial on stderr, ``False`` for silence, ``None`` (default) to print
            only when stderr is a terminal.
        data: the data every trial trains on (default: ``cfg.base.data``, loaded once
            unless a searched path starts with ``data.``).
        callbacks: extra training callbacks run in every trial.
        backend: where trials run (default: this process, ``search.n_jobs`` threads); a
            :class:`~ensemblekit.experiments.ray_backend.RayBackend` runs each trial as an
            independent unit that asks/tells the shared ``study.db`` (``out_dir`` must be a
            folder every node sees; ``n_jobs`` is then ignored).

    Returns:
        ``{"value", "params", "number", "stage", "config", "config_path", "metric",
        "direction", "out", "trials"}``: the best trial (its resolved RunConfig as a dict)
        and every trial's record (stage, number, state, value, params, duration_s, error).

    Raises:
        ConfigError: no validation split, or ``study.db`` holds a different search.
        TrainingError: no trial completed (all failed or were pruned).
        KeyboardInterrupt: re-raised after marking the running trial; run again to resume.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = out_dir or cfg.out
    os.makedirs(out, exist_ok=True)
    search = cfg.search
    if data is None and not any(k.startswith("data.") for k in search.params):
        data = cfg.base.data.load()
    if data is not None and data.val is None:
        raise ConfigError("base.data: the data has no validation split (set val_fraction > 0 or give x_val); trials are scored on it")
    if progress is None:
        progress = sys.stderr.isatty()
    if progress is True:
        progress = lambda rec: print(format_trial(rec, search.metric), file=sys.stderr, flush=True)  # noqa: E731
    ctx = _Search(cfg, out, data, callbacks, progress or None, backend)
    try:
        coarse = ctx.run_stage("coarse", dict(search.params), {}, search.stage_trials, search.sampler)
        stages: list[tuple[str, optuna.Study, Mapping[str, Any]]] = [("coarse", coarse, {})]
        best = best_record([trial_record(t, "coarse", search.params, {}) for t in coarse.get_trials(deepcopy=False)], search.direction)
        if search.refine is not None and best is not None:
            name = f"{cfg.name}-refine"
            stored = (optuna.load_study(study_name=name, storage=ctx.storage).user_attrs.get("search")
                      if name in optuna.get_all_study_names(ctx.storage) else None)
            if stored is not None:  # a started refine stage keeps its space, even if the coarse best moved since
                space, fixed = {k: ParamSpec(**v) for k, v in stored["params"].items()}, stored["fixed"]
            else:
                space, fixed = refine_space(search.params, best["params"], search.refine)
            sampler = search.refine.sampler or ("random" if search.sampler == "grid" else search.sampler)
            if space:
                stages.append(("refine", ctx.run_stage("refine", space, fixed, search.refine.trials, sampler), fixed))
        return write_report(cfg, out, stages)
    finally:
        ctx.storage.engine.dispose()


