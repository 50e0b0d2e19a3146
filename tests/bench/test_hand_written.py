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


def test_a_partial_run_replaces_its_tables_and_keeps_every_other_section() -> None:
    old = report.Table("Old generated table", ["a"])
    old.add(9)
    new = report.Table("A new section's table", ["n"])
    new.add(7)
    text = report.updated_report(PREVIOUS, [old, new], "rerun alone: `run.py --only x`")
    assert "| 9 |" in text and "| 1 |" not in text
    assert text.index("- date: an earlier run") < text.index("- rerun alone")
    order = ["## Old generated table", "## A new section's table", "## Hand one", "## Another gen"]
    assert [text.index(s) for s in order] == sorted(text.index(s) for s in order)
    for kept in ("kept 1", "kept 2", "kept 3", "### a subsection", "| b |"):
        assert kept in text


def test_rerunning_the_same_tables_changes_nothing_but_the_header() -> None:
    table = report.Table("Old generated table", ["a"])
    table.add(1)
    once = report.updated_report(PREVIOUS, [table], "rerun")
    twice = report.updated_report(once, [table], "rerun")
    assert twice.replace("- rerun\n", "") == once.replace("- rerun\n", "")


def test_a_partial_report_merges_its_tables_and_names_its_run() -> None:
    table = report.Table("Old generated table", ["a", "b"])
    table.add(5, "x|y")
    table.notes.append("a note")
    partial = report.to_markdown(
        [table], ["run.py", "--only", "s"], dt.datetime(2026, 2, 3), 60.0, ("9.5", "1")
    )
    text = report.merged_report(PREVIOUS, partial)
    assert "| 5 | x\\|y |" in text and "| 1 |" not in text and "- a note" in text
    assert "`run.py --only s`" in text and "2026-02-03" in text and "load at start 9.5" in text
    assert "kept 3" in text and "## Another generated table" in text
    assert text.count("| --- | --- |") == 1  # the header rule is not read back as a row
