"""Core commands: list, train, evaluate, compare."""

from __future__ import annotations

import os
from typing import Any, List, Optional

import typer

from ..errors import ConfigError
from .app import AcceptCodeOpt, SetOpt, app, console, err_console, table as _table, with_backend_options

@app.command("list")
def list_cmd() -> None:
    """List registered datasets, models, methods, optimizers and schedules."""
    from ..data import list_datasets
    from ..methods import list_methods
    from ..models import list_models, list_wrappers
    from ..training.optim import OPTIMIZERS
    from ..training.schedules import schedule_names

    console.print(_table("ensemblekit registries", ["kind", "names"], [
        ["datasets", ", ".join(list_datasets())],
        ["models", ", ".join(list_models())],
        ["model wrappers", ", ".join(list_wrappers())],
        ["methods", ", ".join(list_methods())],
        ["optimizers", ", ".join(OPTIMIZERS)],
        ["schedules", ", ".join(schedule_names())],
    ]))


_CLASSIFICATION_HEADER = ["", "error %", "NLL", "Brier", "ECE %"]
_REGRESSION_HEADER = ["", "RMSE", "NLL", "CRPS", "PICP95 %", "MPIW95"]


def _is_regression(metrics: dict[str, Any]) -> bool:
    """Whether a split's metrics are :func:`~ensemblekit.metrics.regression_summary.evaluate_gaussian`'s."""
    return "rmse" in metrics and "error" not in metrics


def _metrics_header(results: dict[str, Any]) -> list[str]:
    return _REGRESSION_HEADER if _is_regression(results["test"]) else _CLASSIFICATION_HEADER


def _metrics_rows(results: dict[str, Any]) -> list[list[Any]]:
    """The rows under :func:`_metrics_header`: the ensemble and the mean member (for regression
    also the variance-scaled ensemble when the run fitted one; a member's intervals are not
    recorded, so the mean member's PICP and MPIW read —)."""
    t = results["test"]
    if _is_regression(t):
        return _regression_rows(t)
    rows = [["ensemble", f"{t['error']:.2f}", f"{t['nll']:.4f}", f"{t['brier']:.4f}", f"{100 * t['ece']:.2f}"]]
    mm = t["member_mean"]
    rows.append(["mean member", f"{100 * (1 - mm['accuracy']):.2f}", f"{mm['nll']:.4f}", f"{mm['brier']:.4f}", f"{100 * mm['ece']:.2f}"])
    return rows


def _regression_rows(t: dict[str, Any]) -> list[list[Any]]:
    def row(name: str, m: dict[str, Any]) -> list[Any]:
        picp, mpiw = (m.get("picp") or {}).get("0.95"), (m.get("mpiw") or {}).get("0.95")
        return [name, f"{m['rmse']:.4g}", f"{m['nll']:.4f}", f"{m['crps']:.4g}",
                "—" if picp is None else f"{100 * picp:.1f}", "—" if mpiw is None else f"{mpiw:.4g}"]

    rows = [row("ensemble", t)]
    cal = t.get("calibrated")
    if cal and "variance_scale" in cal:
        rows.append(row(f"variance-scaled (x{cal['variance_scale']:.3g})", cal))
    rows.append(row("mean member", t["member_mean"]))
    return rows


@app.command()
def train(
    config: Optional[str] = typer.Argument(None, help="YAML config (not needed with --resume)."),
    set_: Optional[List[str]] = SetOpt,
    resume: Optional[str] = typer.Option(None, "--resume", help="Continue the killed run in this directory."),
    run_dir: Optional[str] = typer.Option(None, "--run-dir", help="Where to write the run (default: <out>/<name>-<time>)."),
    trust_factory: bool = typer.Option(False, "--trust-factory", help="With --resume: import the model factory path the run's config.yaml names."),
) -> None:
    """Train one method into a run directory (config, metrics.jsonl, checkpoints, results.json, plots)."""
    from ..config import RunConfig, factory_paths
    from ..schema import apply_overrides, load_yaml, parse_config
    from ..experiments.run import default_run_name, run_training

    if resume:
        path = os.path.join(resume, "config.yaml")
        if not os.path.isfile(path):
            raise ConfigError(f"--resume {resume}: no config.yaml there (not a run directory)")
        if set_:
            raise ConfigError("--set cannot change a run being resumed; start a new run instead")
        raw = load_yaml(path)
        factories = factory_paths(raw)
        if factories and not trust_factory:
            raise ConfigError(f"--resume {resume}: its config.yaml names the model factory {factories[0]!r}; resuming would import and run it. "
                              "Add --trust-factory if you trust that run directory")
        cfg = parse_config(raw, RunConfig)
        target = resume
    else:
        if config is None:
            raise ConfigError("give a CONFIG.yaml, or --resume RUN_DIR")
        cfg = parse_config(apply_overrides(load_yaml(config), set_ or []), RunConfig)
        target = run_dir or os.path.join(cfg.out, default_run_name(cfg))
    data = cfg.data.load()
    results = run_training(cfg, target, resume=bool(resume), data=data, on_start=lambda: console.print(
        f"run directory: [bold]{target}[/bold]  (resume a killed run with: ensemblekit train --resume {target})"))
    console.print(_table(f"{cfg.method.display}: {results['members']} member(s), test split of {data.name}",
                         _metrics_header(results), _metrics_rows(results)))
    from .uncertainty import uncertainty_tables

    for title, header, rows in uncertainty_tables(results.get("evaluation") or {}):
        console.print(_table(title, header, rows))
    console.print(f"training took {results['wall_s']:.1f} s; results in {target}/results.json")


@app.command()
def evaluate(
    run_dir: str = typer.Argument(..., help="A run directory written by `train`."),
    data: Optional[str] = typer.Option(None, "--data", help="A dataset name or an .npz file to evaluate on (default: the run's own data)."),
    split: str = typer.Option("test", "--split", help="test | val | train"),
    factory: Optional[str] = typer.Option(None, "--factory", help="pkg.mod:make_net building the members of a run trained on a user factory."),
    trust_factory: bool = typer.Option(False, "--trust-factory", help="Import the model factory path the ensemble file names."),
    shift: bool = typer.Option(False, "--shift", help="Accuracy, NLL and ECE under the corruption suite, severities 1-5 (regression: RMSE, NLL, CRPS, coverage under the tabular suite)."),
    ood: Optional[List[str]] = typer.Option(None, "--ood", help="OOD detection against: held_out (the classes the run was trained "
                                                                "without), noise, constant, permuted, extrapolation (regression), or FILE.npz. "
                                                                "Repeatable or comma-separated."),
    calibrate: bool = typer.Option(False, "--calibrate", help="Temperature scaling (regression: variance scaling) on the validation split, pooled and per member."),
    conformal: Optional[float] = typer.Option(None, "--conformal", help="Split conformal sets (THR, APS, RAPS; regression: normalised intervals) at this alpha, e.g. 0.1."),
    selective: bool = typer.Option(False, "--selective", help="Risk-coverage, AURC and AUGRC of each uncertainty score (regression: MSE risk)."),
    evaluation: Optional[str] = typer.Option(None, "--evaluation", help="A YAML evaluation block (or a config with `evaluation:`); flags add to it."),
    out: Optional[str] = typer.Option(None, "--out", help="Where to write evaluation.json and its plots (default: RUN_DIR/evaluation)."),
    laplace: Optional[str] = typer.Option(None, "--laplace", help="First fit a last-layer Laplace approximation to the run's networks "
                                                                  "(full | kfac | diag) on its training split, and evaluate that; "
                                                                  "written to OUT/laplace.safetensors."),
    laplace_prior: str = typer.Option("marglik", "--laplace-prior", help="How --laplace chooses the prior precision: marglik | val."),
    laplace_predictive: str = typer.Option("probit", "--laplace-predictive", help="--laplace's predictive: probit (exportable) | mc "
                                                                                 "(10 weight samples per network)."),
) -> None:
    """Metrics of a saved ensemble, and with --shift/--ood/--calibrate/--conformal/--selective its uncertainty
    (a regression run: RMSE, NLL, CRPS, interval coverage and width, in the targets' units).

    Never unpickles, and never imports code the files name unless told to.
    """
    from ..evaluation.evaluate import evaluate as evaluate_fn
    from .uncertainty import check_laplace_flags, evaluation_from_flags, fit_run_laplace

    path = os.path.join(run_dir, "ensemble.safetensors")
    if not os.path.isfile(path):
        raise ConfigError(f"{run_dir}: no ensemble.safetensors (has the run finished?)")
    if split not in ("test", "val", "train"):
        raise ConfigError(f"--split must be test, val or train, got {split!r}")
    if laplace is not None:
        check_laplace_flags(path, laplace, laplace_prior, laplace_predictive)
    block = evaluation_from_flags(run_dir, evaluation, shift, ood or [], calibrate, conformal, selective)
    ds, cfg = _evaluation_data(_run_data(run_dir, data), block)
    asked = shift or ood or calibrate or conformal is not None or selective or evaluation
    if cfg is not None and split != "test" and asked:
        raise ConfigError("the uncertainty evaluation reads the test split (and val for calibration); drop --split")
    part = getattr(ds, split)
    if part is None:
        raise ConfigError(f"--split {split}: the data has no {split} split")
    ens = _run_predictor(run_dir, path, ds, factory, trust_factory)
    out_dir = out or os.path.join(run_dir, "evaluation")
    if laplace is not None:
        ens = fit_run_laplace(ens, ds, laplace, laplace_prior, laplace_predictive, out_dir)
    try:
        res = evaluate_fn(ens, part)
    except RuntimeError as exc:
        raise ConfigError(f"the ensemble cannot take {ds.name} examples of shape {ds.input_shape}: {exc}") from None
    console.print(_table(f"{len(ens)} member(s) on the {split} split of {ds.name}", _metrics_header({"test": res}), _metrics_rows({"test": res})))
    div = res["diversity"]
    console.print("diversity: " + ", ".join(f"{k}={v:.4f}" for k, v in div.items()))
    if cfg is not None and asked:
        _uncertainty(ens, ds, cfg, out_dir)


def _run_data(run_dir: str, data: Optional[str]) -> Any:
    """The data to evaluate on: ``--data`` (a name or an .npz), else the run's own (only the data
    section of its config is read: a model factory named there is not imported)."""
    from ..config import DataConfig
    from ..schema import load_yaml, parse_config

    if data is None:
        raw = load_yaml(os.path.join(run_dir, "config.yaml"))
        return parse_config(raw.get("data", "mnist1d"), DataConfig).load()
    return parse_config({"npz": data} if data.endswith(".npz") else {"name": data}, DataConfig).load()


def _run_predictor(run_dir: str, path: str, ds: Any, factory: Optional[str], trust_factory: bool) -> Any:
    """The run's predictor, refused (one line) when it was trained for the other task."""
    from ..predictors import load_predictor
    from .use import user_factory

    fac = user_factory(factory, path, input_shape=ds.input_shape,
                       num_classes=ds.num_outputs if ds.is_regression else ds.num_classes) if factory else None
    ens = load_predictor(path, factory=fac, trust_factory=trust_factory)
    regression = bool(getattr(getattr(ens, "readout", None), "is_regression", False))
    if regression != ds.is_regression:
        task = "regression" if regression else "classification"
        raise ConfigError(f"{run_dir} is a {task} run, and {ds.name!r} is {'regression' if ds.is_regression else 'classification'} "
                          f"data; evaluate it on {task} data")
    return ens


def _evaluation_data(ds: Any, block: Any) -> tuple[Any, Any]:
    """The data as the run was trained on it (its held-out classes removed) and the checked evaluation block."""
    if block is None:
        return ds, None
    from ..evaluation.run import check_evaluation, prepare_data

    ds = prepare_data(ds, block)
    return ds, check_evaluation(block, ds)


def _uncertainty(ens: Any, ds: Any, cfg: Any, out_dir: str) -> None:
    from ..evaluation.forward import predictive
    from ..evaluation.run import evaluate_uncertainty
    from ..serialization import write_json
    from ..training.checkpoint import RunDir
    from .uncertainty import uncertainty_tables

    test = predictive(ens, ds.test)
    unc = evaluate_uncertainty(ens, ds, cfg, test=test)
    for title, header, rows in uncertainty_tables(unc):
        console.print(_table(title, header, rows))
    rd = RunDir(out_dir)
    write_json(rd.file("evaluation.json"), unc)
    title = os.path.basename(os.path.normpath(os.path.dirname(os.path.abspath(out_dir))))
    if unc.get("task") == "regression":
        _regression_plots(unc, test, ds, rd, title)
    else:
        _classification_plots(unc, test, ds, rd, title)
    console.print(f"evaluation written to {out_dir}/evaluation.json (and plots)")


def _classification_plots(unc: Any, test: Any, ds: Any, rd: Any, title: str) -> None:
    from ..metrics.calibration import scale_probs
    from ..report.plots import reliability_diagram
    from ..report.uncertainty_plots import run_plots

    cal = unc.get("calibration")
    if cal:
        pbar = test.pooled()
        reliability_diagram(pbar, ds.test.tensors()[1], rd.file("reliability.png"), title="test reliability",
                            calibrated=scale_probs(pbar, cal["pool_then_calibrate"]["temperature"]))
    run_plots(unc, rd, title=title)


def _regression_plots(unc: Any, test: Any, ds: Any, rd: Any, title: str) -> None:
    """Quantile calibration (raw, and variance-scaled when fitted) and the OOD score histograms; the
    selective and shift plots of :func:`~ensemblekit.report.uncertainty_plots.run_plots` draw
    classification quantities (error %, accuracy, ECE) and are not drawn."""
    from ..metrics.regression_calibration import quantile_calibration, scale_variance
    from ..report.regression_plots import regression_calibration_plot
    from ..report.uncertainty_plots import ood_histograms

    y = ds.test.tensors()[1]
    curves = {"raw": quantile_calibration(test, y)}
    cal = unc.get("calibration")
    if cal:
        c = cal["variance_scaled"]["scale"]
        curves[f"variance-scaled (x{c:.3g})"] = quantile_calibration(scale_variance(test, c), y)
    regression_calibration_plot(curves, rd.file("calibration.png"), title=f"{title}: test quantile calibration")
    if unc.get("ood"):
        ood_histograms(unc["ood"], rd.file("ood_scores.png"), title=f"{title}: OOD scores, test split vs OOD set")


def _compare_header(cfg: Any, out_dir: str) -> int:
    """Print what a comparison will run (its tuning, its cells); returns the number of cells it starts with."""
    splits = cfg.data.splits or 1
    tuned = 0
    if cfg.tuning is not None:
        from ..config.tuning import tuned_labels

        tuned = len(tuned_labels(cfg))
        console.print(f"tuning {tuned} method(s) with {cfg.tuning.trials} trials each at {cfg.tuning.budget}B ({cfg.tuning.objective} on validation)")
    rows_per = len(cfg.methods) + (tuned if cfg.tuning is not None and cfg.tuning.untuned else 0)
    n = rows_per * len(cfg.budgets) * len(cfg.seed_list) * splits
    over = f" x {splits} splits" if cfg.data.splits else ""
    seeds = cfg.seed_list if cfg.auto_seeds is None else f"{cfg.seed_list} (auto, up to {cfg.auto_seeds.max})"
    console.print(f"comparing {rows_per} method row(s) x budgets {cfg.budgets} x seeds {seeds}{over} = {n} cells -> [bold]{out_dir}[/bold]")
    return n


@app.command()
@with_backend_options
def compare(
    config: str = typer.Argument(..., help="YAML config with data, model, train, budgets, seeds, methods."),
    set_: Optional[List[str]] = SetOpt,
    out: Optional[str] = typer.Option(None, "--out", help="Output directory (default: the config's `out`)."),
    force: bool = typer.Option(False, "--force", help="Retrain the cells of --out that were trained under another config or code (default: refuse)."),
    accept_code_change: bool = AcceptCodeOpt,
    backend_for: Any = None,
) -> None:
    """Compare methods x budgets x seeds: results.json, results.md (mean ± std tables) and plots.

    Finished cells are skipped, so re-running the same command continues a killed comparison.
    With --backend ray the cells run as Ray tasks (--out must be a folder every node sees).
    """
    from ..config import CompareConfig, load_config
    from ..experiments.compare import run_compare

    cfg = load_config(config, CompareConfig, set_ or [])
    runner = backend_for()
    out_dir = out or cfg.out
    data = cfg.data.load() if cfg.data.splits is None else None  # with splits every cell loads its own split
    n = _compare_header(cfg, out_dir)
    done = [0]
    import time

    start = time.perf_counter()

    def on_done(spec: dict[str, Any], row: dict[str, Any]) -> None:
        done[0] += 1
        total = max(n, done[0])  # auto seeds add cells as they go
        left = (time.perf_counter() - start) / done[0] * (total - done[0])  # cells reused from disk make it pessimistic early on
        eta = f", ETA {int(left // 60)}:{int(left % 60):02d}" if done[0] < total else ""
        head = f"[{done[0]}/{total}{eta}] {spec['label']} {spec['budget']}B seed {spec['seed']}" + (
            f" split {spec['split']}" if spec.get("split") is not None else "")
        if "failed" in row:
            err_console.print(f"{head}: [red]failed[/red] {row['failed']}")
        elif "skipped" in row:
            console.print(f"{head}: skipped ({row['skipped']})")
        elif "rmse" in row["test"]:
            console.print(f"{head}: RMSE {row['test']['rmse']:.4g}  NLL {row['test']['nll']:.3f}  ({row['wall_s']:.1f} s training)")
        else:
            console.print(f"{head}: error {row['test']['error']:.2f}%  NLL {row['test']['nll']:.3f}  ({row['wall_s']:.1f} s training)")

    def on_trial(record: dict[str, Any]) -> None:
        from ..experiments.tune.compare_tuning import trial_line

        console.print(trial_line(record, cfg.tuning.objective), markup=False, highlight=False, soft_wrap=True)  # type: ignore[union-attr]

    result = run_compare(cfg, out_dir, data=data, on_done=on_done, backend=runner, force=force, accept_code_change=accept_code_change,
                         on_trial=on_trial)
    console.print(result.markdown, markup=False, highlight=False)
    if result.failed:
        raise typer.Exit(1)
