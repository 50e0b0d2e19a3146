"""A progress bar in layers for the steps that take minutes (learned rounding, reconstruction)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


@contextlib.contextmanager
def layer_progress(total: int, show: bool, label: str) -> Iterator[Callable[[str], None]]:
    """Yield ``advance(layer name)``; a bar of ``total`` layers on stderr when ``show``."""
    if not show:
        yield lambda name: None
        return
    columns = (
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[layer]}"),
    )
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task(label, total=total, layer="")
        yield lambda name: bar.update(task, advance=1, layer=name)
