"""Progress display that the library can use without printing by itself.

Library code wraps long loops in :func:`track`. It is silent by default (so
the library stays quiet inside notebooks, tests and other programs); the CLI
calls :func:`enable` once, and from then on ``track`` draws a rich progress
bar on stderr.
"""

from __future__ import annotations

from typing import Iterable, Iterator, TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")

_enabled = False
console = Console(stderr=True)


def enable(on: bool = True) -> None:
    """Turn progress bars on (the CLI does this) or off."""
    global _enabled
    _enabled = on


def enabled() -> bool:
    return _enabled


def make_progress(transient: bool = True) -> Progress:
    """A rich Progress with the project's standard columns (description, bar, n/N, elapsed, ETA)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
        transient=transient,
        disable=not _enabled,
    )


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate over ``items``, drawing a progress bar when progress is enabled."""
    if not _enabled:
        yield from items
        return
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with make_progress() as progress:
        task = progress.add_task(description, total=total, info="")
        for item in items:
            yield item
            progress.advance(task)
