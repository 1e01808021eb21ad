"""What every CLI command shares: the console, error handling, progress switch."""

from __future__ import annotations

import functools
from typing import Callable, NoReturn, TypeVar

import typer
from rich.console import Console

from gadms_cli import progress
from gadms_cli.errors import GadmsError

F = TypeVar("F", bound=Callable)

console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print a one-line error to stderr and exit with ``code``."""
    err_console.print("[bold red]error:[/] ", end="", highlight=False)
    err_console.print(message, markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def cli_command(func: F) -> F:
    """Wrap a command: progress bars on, GadmsError -> one line on stderr and exit 1."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        progress.enable(True)
        try:
            return func(*args, **kwargs)
        except GadmsError as exc:
            fail(str(exc))
        except KeyboardInterrupt:
            fail("interrupted; every file written so far is complete (no half-written output is left)", 130)

    return wrapper  # type: ignore[return-value]


def print_load_report(model) -> None:
    """Where the model's weights came from (loaded / missing / unexpected tensors, casts, guesses) on stderr.

    Only for models built from weights (files, open_clip tags, IRRA-family checkpoints); our own
    checkpoints load exactly and say nothing."""
    report = getattr(model, "load_report", None)
    if report is None or report.kind in ("random init", "gadms checkpoint"):
        return
    for line in report.lines():
        err_console.print(f"weights: {line}", markup=False, highlight=False, soft_wrap=True)
