"""Progress bars on stderr, shown only on a terminal and never with --quiet."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

stderr = Console(stderr=True, highlight=False)


def log(message: str) -> None:
    """One line on stderr, never wrapped or styled, and drawn above a live progress bar."""
    stderr.print(message, markup=False, highlight=False, soft_wrap=True)


def enabled(quiet: bool) -> bool:
    return not quiet and stderr.file.isatty()


class _Rate(TextColumn):
    def __init__(self, unit: str):
        super().__init__("")
        self.unit = unit

    def render(self, task):  # type: ignore[override]
        speed = task.finished_speed or task.speed
        return f"{speed:,.1f} {self.unit}/s" if speed else ""


@contextlib.contextmanager
def bar(description: str, total: int | None, unit: str, show: bool) -> Iterator[Progress | None]:
    """A rich progress bar with count, rate and ETA; yields None (and draws nothing) when not shown."""
    if not show:
        yield None
        return
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        _Rate(unit),
        TextColumn("{task.fields[extra]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=stderr,
        transient=False,
    )
    with progress:
        progress.add_task(description, total=total, extra="")
        yield progress
