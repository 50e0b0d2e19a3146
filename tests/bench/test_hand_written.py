"""A full ``make bench`` run rewrites RESULTS.md but keeps the sections written by hand
(one-off measurements, the figures docs/numerics.md links to)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from benchmarks import report

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "RESULTS.md"

PREVIOUS = f"""# eightbit benchmark results

- date: an earlier run

## Old generated table

| a |
| --- |
| 1 |

## Hand one {report.HAND_WRITTEN}

kept 1

### a subsection

kept 2

## Another generated table

| b |
| --- |

## Hand two {report.HAND_WRITTEN}

kept 3
"""


def test_a_run_keeps_the_hand_written_sections_after_its_tables() -> None:
    table = report.Table("New table", ["c"])
    table.add(2)
    kept = report.hand_written_sections(PREVIOUS)
    text = report.to_markdown([table], ["run.py"], dt.datetime(2026, 1, 1), 60.0, kept=kept)
    assert "Old generated table" not in text and "Another generated table" not in text
    order = [text.index(s) for s in ("## New table", "## Hand one", "kept 1", "### a subsection")]
    assert order == sorted(order)
    assert text.index("kept 2") < text.index("## Hand two") < text.index("kept 3")


def test_without_hand_written_sections_the_report_is_the_tables_alone() -> None:
    table = report.Table("T", ["c"])
    text = report.to_markdown([table], ["run.py"], dt.datetime(2026, 1, 1), 60.0)
    assert text == report.to_markdown(
        [table], ["run.py"], dt.datetime(2026, 1, 1), 60.0, kept=report.hand_written_sections("")
    )
    assert text.endswith("| c |\n| --- |\n")


def test_the_measurements_numerics_links_to_survive_a_run() -> None:
    kept = report.hand_written_sections(RESULTS.read_text(encoding="utf-8"))
    assert "## Measurements behind docs/numerics.md" in kept
    assert "### numerics §I.8" in kept
