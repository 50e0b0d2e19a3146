"""A progress bar in samples and samples per second, on stderr (rich)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class Advance(Protocol):
    def __call__(self, samples: int) -> None: ...


class _SamplesPerSecond(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.1f} samples/s", style="progress.data.speed")


@contextlib.contextmanager
def sample_progress(total: int | None, description: str, *, show: bool) -> Iterator[Advance]:
    """Yield ``advance(samples)``; draw a bar on stderr while the block runs when ``show``."""
    console = Console(stderr=True)
    # On a terminal only: in a pipe or a log the bar's last frame is noise before the
    # result (or before the one line of an error).
    if not show or not console.is_terminal:
        yield lambda samples: None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _SamplesPerSecond(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(description, total=total)
        yield lambda samples: bar.advance(task, samples)
