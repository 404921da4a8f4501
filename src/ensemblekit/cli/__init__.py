"""The ``ensemblekit`` command line: a thin layer over the Python API.

Every user error (bad config, bad data, a bad command-line option, a diverged run, a
full disk) prints one line and exits with code 2; nothing is trained or written before the
config and the data have been validated. Ctrl-C says how to continue. Each group of commands
lives in its own module and registers itself on the shared Typer ``app`` when imported below.

May import: everything (it is the top); heavy modules are imported inside the commands.
"""

from __future__ import annotations

import sys

from ..errors import EnsembleKitError
from . import core, curve, nes, toolkit, use, varhyper  # noqa: F401  (register commands)
from .app import app, err_console

__all__ = ["app", "main"]


def _fail(message: str, code: int = 2) -> None:
    err_console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True, markup=True)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: user errors -> one line on stderr, exit code 2; Ctrl-C -> exit 130."""
    import typer

    try:
        code = app(args=argv, standalone_mode=False)
    except EnsembleKitError as exc:
        _fail(_escape(str(exc)))
    except typer.Exit as exc:
        if exc.exit_code == 130:  # typer's own translation of Ctrl-C
            _interrupted()
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        _interrupted()
    except typer.TyperException as exc:  # a bad option or argument (click's usage errors)
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        _fail(_escape(" ".join(message.split())) + " (see --help)")
    except OSError as exc:  # a full disk, a read-only folder, a missing file
        where = f" {exc.filename}" if exc.filename else ""
        _fail(_escape(f"cannot use{where}: {exc.strerror or exc}"))
    if code == 130:  # typer returns Ctrl-C as exit code 130 when it does not exit itself
        _interrupted()
    sys.exit(code if isinstance(code, int) else 0)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _interrupted() -> None:
    err_console.print("interrupted; the last checkpoint is kept: run the same command again to continue "
                      "(ensemblekit train --resume RUN_DIR for a training run)", highlight=False, soft_wrap=True)
    sys.exit(130)
