"""The shared Typer application, consoles and small helpers of every ``ensemblekit`` command."""

from __future__ import annotations

from typing import Any

import typer
from rich.console import Console
from rich.table import Table

__all__ = ["app", "console", "err_console", "SetOpt", "table"]

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Train, evaluate and compare ensembles of deep networks.",
)
console = Console(stderr=False)
err_console = Console(stderr=True)

SetOpt = typer.Option(None, "--set", "-s", help="Override a config value: key.sub=value (YAML value). Repeatable.")


def table(title: str, header: list[str], rows: list[list[Any]]) -> Table:
    """A rich table with string cells."""
    t = Table(title=title, show_lines=False)
    for h in header:
        t.add_column(h)
    for r in rows:
        t.add_row(*[str(x) for x in r])
    return t
