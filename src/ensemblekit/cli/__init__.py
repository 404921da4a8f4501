"""The ``ensemblekit`` command line: a thin layer over the Python API.

Every user error (bad config, bad data, diverged run) prints one line and exits with
code 2; nothing is trained before the config and the data have been validated.
Each group of commands lives in its own module and registers itself on the shared
Typer ``app`` when imported below.
"""

from __future__ import annotations

import sys

from ..errors import EnsembleKitError
from . import core, curve, nes, toolkit, varhyper  # noqa: F401  (register commands)
from .app import app, err_console

__all__ = ["app", "main"]


def main(argv: list[str] | None = None) -> None:
    """Console entry point: user errors -> one line on stderr, exit code 2."""
    try:
        app(args=argv, standalone_mode=True)
    except EnsembleKitError as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted; resume with the same command (compare) or --resume RUN_DIR (train)")
        sys.exit(130)
