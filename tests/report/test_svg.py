"""The histogram SVG: one bar per non-empty bin plus zeros, coloured by what the format does."""

from __future__ import annotations

import math
import re

from eightbit.report import HistogramData
from eightbit.report.svg import COLORS, histogram_svg


def histogram(**changes: object) -> HistogramData:
    values: dict[str, object] = {
        "tensor": "conv<1>",
        "kind": "activation",
        "node": "conv",
        "dtype": "int8",
        "per_channel": False,
        "first_bin": -9,
        "counts": (1, 0, 5, 50, 400, 900, 300, 20, 2),  # bins -9 .. -1
        "zeros": 7,
        "total": 1685,
        "low_bit": -6.0,  # s = 2^-6: bins below -7 round to zero
        "positive_bit": math.log2(127 / 64),  # ~0.99: bins from 1 on clip
        "negative_bit": 1.0,
        "overflow_percent": 0.0,
        "underflow_percent": 0.1,
        "minimum": -1.0,
        "maximum": 1.0,
        "worst_rank": None,
    }
    values.update(changes)
    return HistogramData(**values)  # type: ignore[arg-type]


def bar_colors(svg: str) -> list[str]:
    return re.findall(
        r'<rect x="[^"]+" y="[^"]+" width="[^"]+" height="[^"]+" fill="(#\w+)"><title>', svg
    )


def test_bars_and_colors() -> None:
    svg = histogram_svg(histogram())
    colors = bar_colors(svg)
    # the zero bar, then the 8 non-empty bins -9, -7, ..., -1: -9 and -8 lie wholly below
    # s/2 = 2^-7 (k + 1 <= -7), the rest inside the window.
    assert colors == [COLORS["zero"], COLORS["underflow"]] + [COLORS["inside"]] * 7
    assert "conv&lt;1&gt;" in svg and "conv<1>" not in svg
    assert "http" not in svg


def test_bins_past_the_largest_magnitude_are_clipped_color() -> None:
    svg = histogram_svg(histogram(first_bin=0, counts=(3, 4, 5), total=19, zeros=7))
    # largest magnitude 2^1: bin 0 ([1, 2)) is inside, bins 1 and 2 clip
    assert bar_colors(svg) == [COLORS["zero"], COLORS["inside"]] + [COLORS["overflow"]] * 2


def test_asymmetric_formats_mark_each_sign() -> None:
    assert "+max" in histogram_svg(histogram()) and "\u2212max" in histogram_svg(histogram())
    symmetric = histogram_svg(histogram(positive_bit=1.0))
    assert "+max" not in symmetric
    unsigned = histogram_svg(histogram(negative_bit=None))
    assert "+max" in unsigned and "\u2212max" not in unsigned


def test_all_zero_tensor_renders() -> None:
    svg = histogram_svg(histogram(first_bin=0, counts=(), total=7))
    assert bar_colors(svg) == [COLORS["zero"]]
