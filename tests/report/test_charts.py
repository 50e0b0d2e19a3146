"""The first-screen charts: pure functions whose SVG says what was drawn (numerics §A.10)."""

from __future__ import annotations

import math
import re

import numpy as np

from eightbit.analysis.slices import PartVerdict, SliceVerdict, slice_verdict
from eightbit.report import LayerRow
from eightbit.report.charts import (
    COLORS,
    MAX_SLICE_BARS,
    SliceSeries,
    depth_chart,
    fix_chart,
    slice_chart,
    slice_series,
)
from eightbit.report.model import FixRow


def layer(index: int, **changes: object) -> LayerRow:
    values: dict[str, object] = {
        "index": index,
        "node": f"block{index}/conv",
        "op_type": "Conv",
        "status": "int8",
        "reason": None,
        "tensor": f"t{index}",
        "dtype": "int8",
        "scale": 0.1,
        "zero_point": 0,
        "sqnr_own_db": 40.0 + index,
        "sqnr_accumulated_db": 40.0 - index,
        "weight_sqnr_db": None,
        "overflow_percent": 0.0,
        "underflow_percent": 0.0,
        "float_bytes": 0,
        "int8_bytes": 0,
        "worst_rank": None,
    }
    values.update(changes)
    return LayerRow(**values)  # type: ignore[arg-type]


def texts(svg: str) -> list[str]:
    return re.findall(r"<text[^>]*>([^<]*)</text>", svg)


def test_depth_chart_one_point_per_node_named_on_hover() -> None:
    layers = [layer(i) for i in range(7)] + [layer(7, node="a<b>&c")]
    svg = depth_chart(layers)
    assert svg.startswith("<svg") and 'viewBox="0 0 ' in svg and 'width="100%"' in svg
    assert svg.count('<g class="node"') == len(layers)
    titles = re.findall(r'<g class="node"[^>]*><title>([^<]*)</title>', svg)
    assert [title.split(" ")[1] for title in titles[:7]] == [f"block{i}/conv" for i in range(7)]
    assert "a&lt;b&gt;&amp;c" in svg and "a<b>" not in svg
    assert "SQNR (dB)" in texts(svg) and any("node in graph order" in t for t in texts(svg))
    # Two dots per measured node and one unbroken line of each kind.
    assert svg.count("<circle") == 2 * len(layers)
    for key in ("accumulated", "own"):
        line = re.search(rf'class="line-{key}" d="([^"]*)"', svg)
        assert line is not None and line.group(1).count("M") == 1
        assert line.group(1).count("L") == len(layers) - 1


def test_depth_chart_marks_float_and_16_bit_nodes_and_breaks_lines() -> None:
    layers = [
        layer(0),
        layer(1, status="float", sqnr_own_db=None, sqnr_accumulated_db=None, dtype=None),
        layer(2, dtype="int16"),
        layer(3),
    ]
    svg = depth_chart(layers)
    kinds = re.findall(r'<g class="node" data-kind="(\w+)">', svg)
    assert kinds == ["int8", "float", "int16", "int8"]
    marks = re.findall(r'<rect class="mark"[^>]*fill="(#\w+)"', svg)
    assert marks == [COLORS["float"], COLORS["int16"]]
    line = re.search(r'class="line-own" d="([^"]*)"', svg)
    assert line is not None and line.group(1).count("M") == 2  # broken at the float node
    assert "not measured" in svg


def test_depth_chart_clips_a_far_outlier_and_says_so() -> None:
    layers = [layer(0, sqnr_own_db=145.0, sqnr_accumulated_db=math.inf)] + [
        layer(i) for i in range(1, 6)
    ]
    svg = depth_chart(layers)
    ticks = texts(svg)
    assert "\u226590" in ticks and "140" not in ticks  # median 42: axis up to 90 dB, marked
    assert "\u221e dB (no error)" in svg


def series(count: int, collapsed: frozenset[int] = frozenset(), **changes: object) -> SliceSeries:
    values: dict[str, object] = {
        "output": "scores",
        "axis": 1,
        "sqnrs": tuple(30.0 + (i % 5) for i in range(count)),
        "collapsed": collapsed,
        "whole_db": 31.5,
    }
    values.update(changes)
    return SliceSeries(**values)  # type: ignore[arg-type]


def bars(svg: str) -> list[tuple[str, str, str]]:
    """(class, fill, title) of every slice bar."""
    return re.findall(r'<rect class="(bar[^"]*)"[^>]*fill="(#\w+)"><title>([^<]*)</title>', svg)


def test_slice_chart_draws_the_planted_collapsed_slice_red() -> None:
    sqnrs = [30.0] * 12
    sqnrs[7] = -3.0
    svg = slice_chart(series(12, frozenset({7}), sqnrs=tuple(sqnrs)))
    drawn = bars(svg)
    assert len(drawn) == 12
    red = [i for i, (css, fill, _) in enumerate(drawn) if fill == COLORS["collapsed"]]
    assert red == [7] and drawn[7][0] == "bar collapsed"
    assert drawn[7][2] == "slice 7: -3.0 dB, collapsed"
    assert "SQNR (dB)" in texts(svg) and "slice index along axis 1 (hover for its SQNR)" in svg
    assert "whole output 31.5 dB" in texts(svg)


def test_many_slices_are_drawn_as_runs_showing_their_worst() -> None:
    count = 5 * MAX_SLICE_BARS
    sqnrs = [40.0] * count
    sqnrs[1001] = 12.0
    svg = slice_chart(series(count, frozenset({3}), sqnrs=tuple(sqnrs)))
    drawn = bars(svg)
    assert len(drawn) == MAX_SLICE_BARS
    assert drawn[0][1] == COLORS["collapsed"] and drawn[0][2].startswith("slices 0-4 (worst)")
    assert sum(fill == COLORS["collapsed"] for _, fill, _ in drawn) == 1
    assert drawn[200][2] == "slices 1000-1004 (worst): 12.0 dB"


def test_slice_series_from_a_real_verdict() -> None:
    rng = np.random.default_rng(0)
    reference = rng.normal(0, 1, (16, 6)).astype(np.float32)
    quantized = np.round(reference * 8) / 8
    quantized[:, 4] = 0.25  # slice 4 collapsed: constant int8 while the float varies
    verdict = slice_verdict(reference, quantized)
    assert verdict is not None and verdict.sqnrs[0][0] == 1 and len(verdict.sqnrs[0][1]) == 6
    assert min(verdict.sqnrs[0][1]) == verdict.worst_sqnr_db
    (drawn,) = slice_series("out", 20.0, verdict)
    assert drawn.collapsed == {4}
    colors = [fill for _, fill, _ in bars(slice_chart(drawn))]
    assert colors == [COLORS["slice"]] * 4 + [COLORS["collapsed"], COLORS["slice"]]


def test_parts_are_labelled_over_their_slices_collapsed_ones_red() -> None:
    parts = (
        PartVerdict("boxes", 1, 0, 4, 25.0, collapsed=False),
        PartVerdict("scores", 1, 4, 10, -1.5, collapsed=True),
        PartVerdict("other_axis", 2, 0, 3, 25.0, collapsed=False),
    )
    verdict = SliceVerdict(
        worst_sqnr_db=-1.5, worst_axis=1, worst_index=4, slices=10, collapsed=(), parts=parts,
        sqnrs=((1, (25.0,) * 4 + (-1.5,) * 6),),
    )  # fmt: skip
    (drawn,) = slice_series("out", 20.0, verdict)
    svg = slice_chart(drawn)
    labels = dict(re.findall(r'<text class="part"[^>]* fill="([^"]+)">([^<]*)</text>', svg))
    assert labels == {
        "currentColor": "boxes 25.0 dB",
        COLORS["collapsed"]: "scores -1.5 dB collapsed",
    }
    assert "other_axis" not in svg


def test_fix_chart_rows_gains_and_costs() -> None:
    rows = [
        FixRow("conv<1>", "t1", int8_db=30.0, kept_float_db=36.5, extra_bytes=3 * 1024),
        FixRow("pool", "t2", int8_db=30.0, kept_float_db=29.96, extra_bytes=0),
        FixRow("gemm", "t3", int8_db=30.0, kept_float_db=math.inf, extra_bytes=-8),
    ]
    svg = fix_chart(rows)
    assert svg.count('<g class="fix">') == 3
    values = texts(svg)
    assert "+6.5 dB" in values and "+3.0 KiB" in values
    assert "0.0 dB" in values and "+0 B" in values  # no "-0.0": nothing gained
    assert "+\u221e dB" in values and "\u22128 B" in values
    assert "conv&lt;1&gt;" in svg
    assert "output SQNR gained (dB)" in values and "parameter bytes added" in values
