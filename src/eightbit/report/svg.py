"""Inline SVG of a log2 histogram with its int8 window marked (docs/numerics.md §A.4).

One bar per bit position k (``|x|`` in ``[2^k, 2^(k+1))``), zeros as a separate grey bar
at the left. Heights are ``log(1 + count)``: the few values that clip or vanish are what
the chart is for, and on a linear axis they would not show next to the bulk. Bars are
coloured by what the format does to them: blue inside the window, orange below half an
LSB (rounds to zero), red past the largest magnitude (clipped). Hand-written SVG stays
small and sharp at any zoom, which matters with hundreds of histograms in one page. The
``<svg>`` scales to its container (``viewBox``, ``width="100%"``) and draws text and axes
in ``currentColor``, so the page's colours (dark mode too) apply.
"""

from __future__ import annotations

import math
from html import escape

from eightbit.report.model import HistogramData

WIDTH, HEIGHT = 640, 180
_LEFT, _RIGHT, _TOP, _BOTTOM = 46, 10, 12, 34
_MAX_TICKS = 16
COLORS = {
    "inside": "#0072b2",
    "underflow": "#e69f00",
    "overflow": "#d55e00",
    "zero": "#8c8c8c",
    "window": "#009e7333",
    "clip_band": "#d55e001a",
    "round_band": "#e69f001a",
}


def histogram_svg(data: HistogramData) -> str:
    """An ``<svg>`` element for ``data`` (no external references)."""
    last_bin = data.first_bin + len(data.counts) - 1
    low = math.floor(data.low_bit) - 2
    high = math.ceil(data.high_bit) + 1
    if data.counts:
        low, high = min(low, data.first_bin), max(high, last_bin)
    slots = high - low + 3  # one for zeros, one gap, then the bins low..high
    plot_width = WIDTH - _LEFT - _RIGHT
    plot_height = HEIGHT - _TOP - _BOTTOM
    slot = plot_width / slots
    bottom = _TOP + plot_height

    def x_of(bit: float) -> float:
        return _LEFT + (2 + bit - low) * slot

    total = max(data.total, 1)
    tallest = max([*data.counts, data.zeros, 1])
    parts = [
        f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="100%" role="img" class="hist" '
        f'aria-label="log2 histogram of {escape(data.tensor)}">',
        f"<title>log2 |x| of {escape(data.tensor)}</title>",
    ]
    right_edge = x_of(high + 1)
    underflow_edge = max(x_of(low), min(x_of(data.low_bit - 1), right_edge))
    window_left = max(x_of(low), x_of(data.low_bit))
    window_right = min(right_edge, x_of(data.high_bit))
    parts.append(
        _rect(x_of(low), _TOP, underflow_edge - x_of(low), plot_height, COLORS["round_band"])
    )
    parts.append(
        _rect(window_left, _TOP, window_right - window_left, plot_height, COLORS["window"])
    )
    parts.append(
        _rect(window_right, _TOP, right_edge - window_right, plot_height, COLORS["clip_band"])
    )
    if data.positive_bit != data.negative_bit:  # asymmetric: mark each sign's limit
        for row, (label, bit) in enumerate(
            (("+max", data.positive_bit), ("\u2212max", data.negative_bit))
        ):
            if bit is not None:
                parts.append(_marker(x_of(bit), label, row))

    def bar(left: float, count: int, color: str, tip: str) -> str:
        height = plot_height * math.log1p(count) / math.log1p(tallest)
        share = 100.0 * count / total
        return (
            f'<rect x="{left + slot * 0.1:.1f}" y="{bottom - height:.1f}" '
            f'width="{slot * 0.8:.1f}" height="{height:.1f}" fill="{color}">'
            f"<title>{escape(tip)}: {count} ({share:.3g}%)</title></rect>"
        )

    parts.append(bar(_LEFT, data.zeros, COLORS["zero"], "x = 0"))
    for offset, count in enumerate(data.counts):
        if count:
            k = data.first_bin + offset
            tip = f"2^{k} \u2264 |x| < 2^{k + 1}"
            parts.append(bar(x_of(k), count, _bin_color(k, data), tip))
    parts.append(
        f'<line x1="{_LEFT}" y1="{bottom}" x2="{right_edge:.1f}" y2="{bottom}" '
        'stroke="currentColor"/>'
    )
    parts.append(_text(_LEFT + slot / 2, bottom + 14, "0"))
    step = max(1, math.ceil((high - low + 1) / _MAX_TICKS))
    for k in range(low, high + 1):
        if (k - low) % step == 0:
            parts.append(_text(x_of(k + 0.5), bottom + 14, str(k)))
    parts.append(
        _text(_LEFT + plot_width / 2, HEIGHT - 4, "bit position k:  2^k \u2264 |x| < 2^(k+1)")
    )
    parts.append(_text(_LEFT - 4, _TOP + 8, _count(tallest), anchor="end"))
    parts.append(_text(_LEFT - 4, _TOP + 21, "(log)", anchor="end"))
    parts.append(_text(_LEFT - 4, bottom, "0", anchor="end"))
    parts.append("</svg>")
    return "".join(parts)


def _bin_color(k: int, data: HistogramData) -> str:
    if k + 1 <= data.low_bit - 1:
        return COLORS["underflow"]  # every value of the bin is below s/2
    if k >= data.high_bit:
        return COLORS["overflow"]  # every value of the bin is past the largest magnitude
    return COLORS["inside"]


def _rect(x: float, y: float, width: float, height: float, fill: str) -> str:
    if width <= 0:
        return ""
    return (
        f'<rect x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" height="{height:.1f}" fill="{fill}"/>'
    )


def _marker(x: float, label: str, row: int) -> str:
    return (
        f'<line x1="{x:.1f}" y1="{_TOP}" x2="{x:.1f}" y2="{HEIGHT - _BOTTOM}" '
        'stroke="currentColor" stroke-dasharray="3 3"/>'
        + _text(x + 3, _TOP + 10 + 13 * row, label, anchor="start")
    )


def _count(count: int) -> str:
    """A count in at most four characters: 999, 12k, 3.4M."""
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if count >= limit:
            value = count / limit
            return f"{value:.0f}{suffix}" if value >= 10 else f"{value:.1f}{suffix}"
    return str(count)


def _text(x: float, y: float, text: str, *, anchor: str = "middle") -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" font-size="11" text-anchor="{anchor}" '
        f'fill="currentColor">{escape(text)}</text>'
    )
