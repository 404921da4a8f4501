"""The shared Typer application, consoles and small helpers of every ``ensemblekit`` command."""

from __future__ import annotations

import functools
import inspect
import os
from typing import Any, Callable, List, Optional, Sequence, TypeVar

import typer
from rich.console import Console
from rich.table import Table

__all__ = ["app", "console", "err_console", "SetOpt", "RunDirOpt", "AcceptCodeOpt", "table", "open_experiment", "with_backend_options",
           "preset_command"]

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Train, evaluate and compare ensembles of deep networks.",
)
console = Console(stderr=False)
err_console = Console(stderr=True)

SetOpt = typer.Option(None, "--set", "-s", help="Override a config value: key.sub=value (YAML value). Repeatable.")
AcceptCodeOpt = typer.Option(False, "--accept-code-change",
                             help="Keep finished work of the same config that other code computed (an upgrade, a new torch); "
                                  "recorded in its spec.json, and the report names those rows (default: refuse).")
ForceOpt = typer.Option(False, "--force", help="Retrain the cells of the run directory trained under another config or code "
                                                "(default: refuse).")
RunDirOpt = typer.Option(None, "--run-dir", help="Where to write the run (default: <out>/<config name>); the same command resumes it.")


@app.callback()
def _global_options(
    ctx: typer.Context,
    threads: Optional[int] = typer.Option(None, "--threads", min=1, envvar="ENSEMBLEKIT_THREADS",
                                          help="CPU threads torch may use. Default: the cores this process may use (affinity, "
                                               "cgroup quota of its own cgroup) minus those other processes keep busy, "
                                               "re-measured every few seconds while training. Setting it pins the count (never "
                                               "changed: reruns are bit-identical); use it to share a machine between runs on "
                                               "purpose (two runs with every core each slow each other down several-fold)."),
) -> None:
    """Train, evaluate and compare ensembles of deep networks."""
    from ..threads import configure_threads

    given = getattr(ctx.get_parameter_source("threads"), "name", "")  # click's ParameterSource (typer may bundle its own)
    source = "ENSEMBLEKIT_THREADS" if given == "ENVIRONMENT" else "--threads"
    configure_threads(threads, source=source if threads is not None else "auto")


C = TypeVar("C")


def open_experiment(config: str, overrides: Sequence[str] | None, kind: type[C], run_dir: str | None, suffix: Callable[[C], str] | None = None) -> tuple[C, str, Any]:
    """Parse and validate an experiment config, choose its run directory, load its data.

    Everything is checked before any training starts (a bad config or data exits 2).

    Returns:
        ``(cfg, run_dir, data)``; the default run directory is ``<cfg.out>/<config name><suffix(cfg)>``.
    """
    from ..schema import apply_overrides, load_yaml, parse_config

    cfg = parse_config(apply_overrides(load_yaml(config), list(overrides or [])), kind)
    target = run_dir or os.path.join(cfg.out, os.path.splitext(os.path.basename(config))[0] + (suffix(cfg) if suffix else ""))  # type: ignore[attr-defined]
    data = cfg.data.load()  # type: ignore[attr-defined]
    console.print(f"run directory: [bold]{target}[/bold]  (run the same command again to resume)")
    return cfg, target, data


def table(title: str, header: list[str], rows: list[list[Any]]) -> Table:
    """A rich table with string cells."""
    t = Table(title=title, show_lines=False)
    for h in header:
        t.add_column(h)
    for r in rows:
        t.add_row(*[str(x) for x in r])
    return t


_BACKEND_OPTIONS = {
    "backend": typer.Option(None, "--backend", help="local (one run after another here) | ray (runs as Ray tasks; pip install "
                                                    "'ensemblekit\\[ray]'). Default: local, or the config's `backend`."),
    "address": typer.Option(None, "--address", help="Ray cluster to join (auto, host:6379, ray://host:10001); default: start a local Ray instance."),
    "cpus_per_run": typer.Option(None, "--cpus-per-run", help="CPUs (and torch threads) each run reserves on Ray (default 1)."),
    "gpus_per_run": typer.Option(None, "--gpus-per-run", help="GPUs each run reserves on Ray (default 0; 1 = one run per GPU)."),
}
_BACKEND_TYPES = {"backend": Optional[str], "address": Optional[str], "cpus_per_run": Optional[float], "gpus_per_run": Optional[float]}


def with_backend_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Give a command the scale-out options ``--backend/--address/--cpus-per-run/--gpus-per-run``.

    The command declares a ``backend_for`` parameter instead and calls ``backend_for(default)``
    (``default``: the config's backend, or ``local``) to get the execution backend; a Ray
    option given without ``--backend ray`` is refused there with one line."""

    @functools.wraps(fn)
    def wrapper(*args: Any, backend: Optional[str] = None, address: Optional[str] = None, cpus_per_run: Optional[float] = None,
                gpus_per_run: Optional[float] = None, **kwargs: Any) -> Any:
        from ..experiments.backends import backend_from_cli

        def backend_for(default: str = "local") -> Any:
            return backend_from_cli(backend or default, address, cpus_per_run, gpus_per_run)

        return fn(*args, backend_for=backend_for, **kwargs)

    sig = inspect.signature(fn)
    params = [p for p in sig.parameters.values() if p.name != "backend_for"]
    params += [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=_BACKEND_TYPES[name])
               for name, opt in _BACKEND_OPTIONS.items()]
    wrapper.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {**{k: v for k, v in fn.__annotations__.items() if k != "backend_for"}, **_BACKEND_TYPES}
    return wrapper


def preset_command(name: str, example: str, help_text: str) -> Callable[..., None]:
    """Register ``ensemblekit <name> CONFIG.yaml``, the one command skeleton of every preset
    (:mod:`ensemblekit.experiments.presets`): ``--set``, ``--run-dir``, ``--force``,
    ``--accept-code-change`` and the backend options; the config and the data are validated
    before anything is written (exit 2, one line), the preset's tables are printed, and a
    failed cell (named, with its error) makes the exit code 1.

    Args:
        name: the preset (``nes``, ``varhyper``, ``curve``). example: a shipped config, for
            ``--help``. help_text: the command's help text.
    """

    def command(
        config: str = typer.Argument(..., help=f"YAML config (see {example})."),
        set_: Optional[List[str]] = SetOpt,
        run_dir: Optional[str] = RunDirOpt,
        force: bool = ForceOpt,
        accept_code_change: bool = AcceptCodeOpt,
        backend_for: Any = None,
    ) -> None:
        from rich.markup import escape

        from ..experiments.presets import TableSpec, get_preset, run_preset

        preset = get_preset(name)
        cfg, target, data = open_experiment(config, set_, preset.config, run_dir, suffix=preset.run_dir_suffix)
        run = run_preset(preset, cfg, target, data=data, backend=backend_for(cfg.backend), force=force, accept_code_change=accept_code_change)
        for item in preset.show(cfg, run.results, data, target):
            console.print(table(item.title, item.header, item.rows) if isinstance(item, TableSpec) else item)
        for spec, row in run.failed:
            console.print(f"[red]failed[/red] {escape(spec['key'])}: {escape(str(row['failed']))}", highlight=False)
        if run.failed:
            raise typer.Exit(1)

    command.__doc__ = help_text
    command.__name__ = name
    return app.command(name)(with_backend_options(command))
