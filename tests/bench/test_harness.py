"""The benchmark harness's own arithmetic and bookkeeping, on tiny synthetic data.

No model, photo or third-party quantizer is touched: these run in ``make test``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
from pathlib import Path

import numpy as np
import pytest
from benchmarks import images, metrics, report
from benchmarks.feeds import NpyBatches


def test_agreement_and_sqnr_on_known_values() -> None:
    reference = np.array([[3.0, 1.0, 0.0, 0.0, 0.0, 0.0], [0.0, 2.0, 1.0, 0.0, 0.0, 0.0]])
    swapped = reference[:, [1, 0, 2, 3, 4, 5]]  # row 0 changes its arg-max, row 1 too
    assert metrics.top1_agreement(reference, reference) == 1.0
    assert metrics.top1_agreement(reference, swapped) == 0.0
    assert metrics.top5_agreement(reference, swapped) == 1.0
    assert metrics.sqnr_db(reference, reference) == math.inf
    noise = np.full_like(reference, 0.1)
    expected = 10 * math.log10(float(np.sum(reference**2)) / float(np.sum(noise**2)))
    assert metrics.sqnr_db(reference, reference + noise) == pytest.approx(expected)


def test_metrics_refuse_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="equal shape"):
        metrics.top1_agreement(np.zeros((2, 3)), np.zeros((3, 3)))


def test_npy_batches_reads_every_row_once_per_pass(tmp_path: Path) -> None:
    data = np.arange(5 * 2 * 3, dtype=np.float32).reshape(5, 2, 3)
    path = tmp_path / "x.npy"
    np.save(path, data)
    batches = NpyBatches(path, count=5, batch_size=2)
    for _ in range(2):  # re-iterable: calibrators may take two passes
        got = list(batches)
        assert [len(b) for b in got] == [2, 2, 1]
        np.testing.assert_array_equal(np.concatenate(got), data)
    assert len(batches) == 3
    assert [len(b) for b in NpyBatches(path, count=3, batch_size=2)] == [2, 1]
    with pytest.raises(ValueError, match="asked for 6"):
        NpyBatches(path, count=6)


def test_crop_boxes_are_deterministic_in_bounds_and_exclusive() -> None:
    shapes = {"a": (300, 451), "b": (512, 512)}
    first = images.crop_boxes(shapes, 20, seed=1)
    assert first == images.crop_boxes(shapes, 20, seed=1)
    for box in first:
        height, width = shapes[box.photo]
        assert box.left >= 0 and box.left + box.width <= width
        assert box.top >= 0 and box.top + box.height <= height
    assert [b.photo for b in first[:4]] == ["a", "b", "a", "b"]  # round-robin
    others = images.crop_boxes(shapes, 20, seed=1, exclude=frozenset(first[:5]))
    assert not set(others) & set(first[:5])


def test_markdown_report_names_command_and_escapes_cells() -> None:
    table = report.Table("T", ["a", "b"])
    table.add(0.123456, "x|y")
    table.add(float("nan"), None)

    text = report.to_markdown(
        [table], ["python", "run.py", "--only", "latency"], dt.datetime(2026, 1, 1), 60.0
    )
    assert "`python run.py --only latency`" in text
    assert "| 0.123 | x\\|y |" in text
    assert "| — | — |" in text
    with pytest.raises(ValueError, match="row has 1 cells"):
        table.add(1)


def test_run_rejects_unknown_section() -> None:
    from benchmarks import run

    with pytest.raises(SystemExit):
        run.parse_args(["--only", "quantize,speed"])
    assert run.parse_args(["--only", "latency"]).only == {"latency"}
    assert isinstance(run.parse_args([]), argparse.Namespace)


def test_report_lists_minutes_per_section() -> None:
    started = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    text = report.to_markdown([], ["run.py"], started, 90.0, minutes={"zoo": 1.25, "codegen": 0.25})
    assert "- minutes per section: zoo 1.2, codegen 0.2" in text
