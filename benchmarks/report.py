"""Tables of results, the machine they were measured on, and the RESULTS.md writer.

Sections produce ``Table`` values; this module only renders them (to the terminal with rich and
to Markdown), so a section never formats and the report never measures.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import math
import os
import platform
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

PACKAGES = (
    "eightbit",
    "numpy",
    "onnx",
    "onnxruntime",
    "torch",
    "nncf",
    "scikit-image",
    "scikit-learn",
    "matplotlib",
    "pillow",
    "threadpoolctl",
)
COMPILERS = ("gcc", "arm-none-eabi-gcc")


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *cells: object) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"{self.title}: row has {len(cells)} cells, table {len(self.columns)}")
        self.rows.append([fmt(c) for c in cells])


def fmt(value: object, digits: int = 3) -> str:
    """A cell: floats to ``digits`` significant figures, NaN/None as an em dash."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "—"
        if math.isinf(value):
            return "∞"
        return f"{value:.{digits}g}" if abs(value) < 10**digits else f"{value:.0f}"
    return str(value)


def machine_info() -> dict[str, str]:
    """CPU model (lscpu), core count, OS, Python and package versions."""
    cpu = platform.processor() or "unknown"
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in lscpu.splitlines():
            if line.startswith("Model name:"):
                cpu = line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    info = {
        "CPU": cpu,
        "cores": f"{os.cpu_count()} logical (affinity: {len(os.sched_getaffinity(0))})",
        "OS": platform.platform(),
        "Python": sys.version.split()[0],
    }
    for name in PACKAGES:
        try:
            info[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            info[name] = "not installed"
    for compiler in COMPILERS:  # the codegen section's sizes depend on them
        info[compiler] = compiler_version(compiler)
    return info


def compiler_version(command: str) -> str:
    """The first line of ``command --version``, or "not installed"."""
    try:
        done = subprocess.run([command, "--version"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "not installed"
    return done.stdout.splitlines()[0].strip() if done.stdout else "unknown"


def load_average() -> str:
    """1-minute load average over the core count: above 1, timings include waiting for a CPU."""
    return f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} cores"


# The heading of a section written by hand (one-off measurements, docs/numerics.md's figures):
# a full run keeps such sections of the file it replaces, after its own tables.
HAND_WRITTEN = "— not part of `make bench`"


def hand_written_sections(previous: str) -> str:
    """The sections of an earlier report whose ``## `` heading says they are not part of
    ``make bench``, with their ``###`` subsections, in order."""
    _, blocks = _blocks(previous)
    return "".join(
        f"{line}\n" for title, lines in blocks if HAND_WRITTEN in title for line in lines
    )


def table_markdown(table: Table) -> list[str]:
    """One table as its ``## `` section: heading, rows and notes."""
    lines = ["", f"## {table.title}", ""]
    lines.append("| " + " | ".join(table.columns) + " |")
    lines.append("|" + "|".join(" --- " for _ in table.columns) + "|")
    lines += [
        "| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in table.rows
    ]
    if table.notes:
        lines.append("")
        lines += [f"- {note}" for note in table.notes]
    return lines


def _blocks(text: str) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """A report split into its header lines and its ``## `` sections, each (title, lines)."""
    header: list[str] = []
    blocks: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("## "):
            blocks.append((line[3:], [line]))
        elif blocks:
            blocks[-1][1].append(line)
        else:
            header.append(line)
    return header, blocks


def merged_report(previous: str, partial: str) -> str:
    """``previous`` with the sections of an earlier partial run's report (``partial``, a
    file ``--only`` wrote) replaced or added as ``updated_report`` does; the header line
    names that run's command, date and load, since its figures are not this file's run."""
    header, blocks = _blocks(partial)
    facts = {
        line[2:].split(":", 1)[0]: line[2:].split(":", 1)[1].strip()
        for line in header
        if line.startswith("- ") and ":" in line
    }
    rerun = (
        f"merged from a partial run: {facts.get('command', '?')} on {facts.get('date', '?')}; "
        f"load at start {facts.get('load average (1 min) at start', '?')}"
    )
    tables = [_table_of(title, lines) for title, lines in blocks if HAND_WRITTEN not in title]
    return updated_report(previous, tables, rerun)


def _table_of(title: str, lines: list[str]) -> Table:
    """A ``## `` section of a report read back as a Table (rows and notes as written)."""
    rows = [line for line in lines if line.startswith("| ")]
    cells = [
        [cell.strip().replace("\\|", "|") for cell in row.strip().strip("|").split(" | ")]
        for row in rows
    ]
    table = Table(title, cells[0] if cells else [])
    table.rows = [row for row in cells[1:] if set(row) != {"---"}]  # not the header rule
    table.notes = [line[2:] for line in lines if line.startswith("- ")]
    return table


def updated_report(previous: str, tables: list[Table], rerun: str) -> str:
    """``previous`` with the sections of ``tables`` replaced (matched by title) or, when new,
    added before the hand-written sections; ``rerun`` (which command reran what, when) joins
    the header, so a reader sees that these tables are newer than the full run's."""
    header, blocks = _blocks(previous)
    while header and not header[-1].strip():
        header.pop()
    fresh = {table.title: table_markdown(table)[1:] for table in tables}
    kept: list[list[str]] = []
    for title, lines in blocks:
        if title in fresh:
            kept.append([*fresh.pop(title), ""])
        else:
            kept.append(lines)
    first_hand_written = next(
        (i for i, (title, _) in enumerate(blocks) if HAND_WRITTEN in title), len(blocks)
    )
    kept[first_hand_written:first_hand_written] = [[*lines, ""] for lines in fresh.values()]
    body = [line for lines in kept for line in lines]
    text = "\n".join([*header, f"- {rerun}", "", *body]).rstrip()
    return text + "\n"


def to_markdown(
    tables: list[Table],
    command: list[str],
    started: dt.datetime,
    seconds: float,
    load: tuple[str, str] = ("?", "?"),
    minutes: dict[str, float] | None = None,
    kept: str = "",
) -> str:
    lines = [
        "# eightbit benchmark results",
        "",
        "Generated by `make bench`; do not edit by hand, except the sections at the end whose",
        f'heading says "{HAND_WRITTEN[2:]}" (a run keeps them).',
        "",
        f"- command: `{shlex.join(command)}`",
        f"- date: {started.isoformat(timespec='seconds')} (took {seconds / 60:.1f} min)",
    ]
    lines += [f"- {key}: {value}" for key, value in machine_info().items()]
    lines.append(f"- load average (1 min) at start: {load[0]}; at end: {load[1]}")
    if minutes:
        took = ", ".join(f"{name} {value:.1f}" for name, value in minutes.items())
        lines.append(f"- minutes per section: {took}")
    for table in tables:
        lines += table_markdown(table)
    text = "\n".join(lines) + "\n"
    return f"{text}\n{kept.rstrip()}\n" if kept.strip() else text


def write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file in the same folder and rename, so readers never see half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def print_tables(tables: list[Table]) -> None:
    from rich.console import Console
    from rich.table import Table as RichTable

    # Wide enough for the tables even when stdout is a pipe (rich then assumes 80 columns).
    console = Console(width=None if sys.stdout.isatty() else 200)
    for table in tables:
        rich_table = RichTable(title=table.title, title_justify="left")
        for column in table.columns:
            rich_table.add_column(column)
        for row in table.rows:
            rich_table.add_row(*row)
        console.print(rich_table)
        for note in table.notes:
            console.print(f"  [dim]{note}[/dim]")
