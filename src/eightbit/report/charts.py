"""The report's first-screen charts as inline SVG: pure functions, data in, ``<svg>`` out.

docs/numerics.md §A.10 says what each chart draws. Every chart is one ``<svg>`` with a
``viewBox`` and ``width="100%"``, so it scales with the page; text and axes use
``currentColor`` and the page's CSS variables, so dark mode needs no second drawing.
Hover labels are SVG ``<title>`` elements: no script is needed to name a point.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from eightbit.analysis.slices import PartVerdict, SliceVerdict
from eightbit.report.chart_axes import (
    Frame,
    db_axis,
    db_grid,
    db_text,
    legend,
    line_path,
    open_svg,
    text,
    x_ticks,
)
from eightbit.report.model import FixRow, LayerRow

# Above this many slices along an axis, one bar stands for a run of slices (their minimum).
MAX_SLICE_BARS = 240
# The depth chart's axis ends this far above the median SQNR: a nearly exact tensor (a
# quantized input at 140 dB) would otherwise flatten every other point to the bottom.
DEPTH_HEADROOM_DB = 40.0
COLORS = {
    "accumulated": "#0072b2",
    "own": "#e69f00",
    "float": "#cc79a7",
    "int16": "#009e73",
    "slice": "#0072b2",
    "collapsed": "#d7191c",
    "gain": "#009e73",
    "loss": "#8c8c8c",
    "cost": "#cc79a7",
    "part_band": "#8c8c8c22",
}


def headroom_top(values: Sequence[float | None], low: float, high: float) -> float:
    """``high``, or a whole ten DEPTH_HEADROOM_DB above the median when that is lower."""
    finite = sorted(v for v in values if v is not None and math.isfinite(v))
    if not finite:
        return high
    cap = 10.0 * math.ceil((finite[len(finite) // 2] + DEPTH_HEADROOM_DB) / 10.0)
    return max(min(cap, high), low + 10.0)


# --- along depth -------------------------------------------------------------------------


def depth_chart(layers: Sequence[LayerRow]) -> str:
    """Accumulated and own SQNR of each node's output, in graph order (§A.10).

    One ``<g class="node">`` per layer row (its ``<title>`` names the node); nodes kept in
    float and 16-bit outputs get a mark under the axis.
    """
    values = [v for row in layers for v in (row.sqnr_accumulated_db, row.sqnr_own_db)]
    low, high = db_axis(values)
    top = headroom_top(values, low, high)
    frame = Frame(height=300, low_db=low, high_db=top, bottom=58, clipped=top < high)
    slot = frame.plot_width / max(len(layers), 1)

    def x_of(index: int) -> float:
        return frame.left + (index + 0.5) * slot

    parts = [open_svg("depth", frame.height, "SQNR along the network's depth")]
    parts += db_grid(frame)
    for index, row in enumerate(layers):
        parts.append(_depth_node(row, x_of(index), slot, frame))
    for key, dashes in (("accumulated", ""), ("own", ' stroke-dasharray="5 3"')):
        points = [
            None if (value := _sqnr(row, key)) is None else (x_of(i), frame.y_of(value))
            for i, row in enumerate(layers)
        ]
        parts.append(
            f'<path class="line-{key}" d="{line_path(points)}" fill="none" '
            f'stroke="{COLORS[key]}" stroke-width="2"{dashes}/>'
        )
    parts += x_ticks([x_of(i) for i in range(len(layers))], frame)
    parts.append(text(frame.left + frame.plot_width / 2, frame.height - 6, _X_DEPTH, "axis"))
    parts.append(
        legend(
            [
                ("line", COLORS["accumulated"], "accumulated SQNR"),
                ("dash", COLORS["own"], "own SQNR"),
                ("box", COLORS["float"], "kept in float"),
                ("box", COLORS["int16"], "16-bit output"),
            ]
        )
    )
    parts.append("</svg>")
    return "".join(parts)


_X_DEPTH = "node in graph order (hover for its name)"


def _sqnr(row: LayerRow, key: str) -> float | None:
    return row.sqnr_accumulated_db if key == "accumulated" else row.sqnr_own_db


def _depth_node(row: LayerRow, x: float, slot: float, frame: Frame) -> str:
    """One node: a hover target the height of the plot, its dots, and its marks."""
    kind = _node_kind(row)
    tip = (
        f"#{row.index} {row.node} ({row.op_type}, {kind}): accumulated "
        f"{db_text(row.sqnr_accumulated_db)}, own {db_text(row.sqnr_own_db)}"
    )
    parts = [
        f'<g class="node" data-kind="{kind}"><title>{escape(tip)}</title>',
        f'<rect x="{x - slot / 2:.1f}" y="{frame.top}" width="{slot:.2f}" '
        f'height="{frame.plot_bottom - frame.top + 14:.1f}" fill="#000" fill-opacity="0"/>',
    ]
    if kind in ("float", "int16"):
        parts.append(
            f'<rect class="mark" x="{x - max(slot * 0.4, 1.5):.1f}" '
            f'y="{frame.plot_bottom + 3:.1f}" width="{max(slot * 0.8, 3):.1f}" height="8" '
            f'fill="{COLORS[kind]}"/>'
        )
    radius = 3.0 if slot >= 6 else 1.6
    for key in ("accumulated", "own"):
        value = _sqnr(row, key)
        if value is not None:
            parts.append(
                f'<circle cx="{x:.1f}" cy="{frame.y_of(value):.1f}" r="{radius}" '
                f'fill="{COLORS[key]}"/>'
            )
    parts.append("</g>")
    return "".join(parts)


def _node_kind(row: LayerRow) -> str:
    if row.status == "float":
        return "float"
    if row.dtype in ("int16", "uint16"):
        return "int16"
    return row.status


# --- per output slice ----------------------------------------------------------------------


@dataclass(frozen=True)
class SliceSeries:
    """The SQNR of every slice of one output along one axis, and what the verdict said."""

    output: str
    axis: int
    sqnrs: tuple[float, ...]
    collapsed: frozenset[int]
    whole_db: float
    parts: tuple[PartVerdict, ...] = ()  # the parts along this axis


def slice_chart(series: SliceSeries) -> str:
    """One bar per slice (or per run of slices), collapsed ones red (§A.9, §A.10)."""
    low, high = db_axis([*series.sqnrs, series.whole_db], include_zero=True)
    frame = Frame(height=240, low_db=low, high_db=high)
    runs = slice_runs(len(series.sqnrs))
    slot = frame.plot_width / max(len(runs), 1)
    count = len(series.sqnrs)

    def x_of(index: float) -> float:  # the left edge of slice ``index``
        return frame.left + frame.plot_width * index / max(count, 1)

    label = f"SQNR of each slice of {series.output} along axis {series.axis}"
    parts = [open_svg("slices", frame.height, label)]
    for position, part in enumerate(series.parts):
        parts.append(_part_band(part, x_of(part.start), x_of(part.stop), position, frame))
    parts += db_grid(frame)
    base = frame.y_of(max(low, min(0.0, high)))
    for position, run in enumerate(runs):
        parts.append(_slice_bar(series, run, frame.left + position * slot, slot, base, frame))
    y_whole = frame.y_of(series.whole_db)
    parts.append(
        f'<line class="whole" x1="{frame.left}" y1="{y_whole:.1f}" '
        f'x2="{frame.left + frame.plot_width:.1f}" y2="{y_whole:.1f}" stroke="currentColor" '
        f'stroke-dasharray="6 4"><title>whole output: {db_text(series.whole_db)}</title></line>'
    )
    parts += x_ticks([frame.left + (i + 0.5) * slot for i in range(len(runs))], frame, runs)
    parts.append(
        text(
            frame.left + frame.plot_width / 2,
            frame.height - 6,
            f"slice index along axis {series.axis} (hover for its SQNR)",
            "axis",
        )
    )
    parts.append(
        legend(
            [
                ("box", COLORS["slice"], "slice SQNR"),
                ("box", COLORS["collapsed"], "collapsed"),
                ("dash", "currentColor", f"whole output {db_text(series.whole_db)}"),
            ]
        )
    )
    parts.append("</svg>")
    return "".join(parts)


def _part_band(part: PartVerdict, left: float, right: float, position: int, frame: Frame) -> str:
    """A part's name (and SQNR) over its slices, red when collapsed; every other one shaded."""
    band = ""
    if position % 2 == 0:
        band = (
            f'<rect class="part" x="{left:.1f}" y="{frame.top}" width="{right - left:.1f}" '
            f'height="{frame.plot_bottom - frame.top}" fill="{COLORS["part_band"]}"/>'
        )
    label = f"{part.name} {db_text(part.sqnr_db)}" + (" collapsed" if part.collapsed else "")
    colour = f' fill="{COLORS["collapsed"]}"' if part.collapsed else ' fill="currentColor"'
    return (
        f'{band}<text class="part" x="{(left + right) / 2:.1f}" y="{frame.top - 4}" '
        f'text-anchor="middle"{colour}>{escape(label)}</text>'
    )


def slice_runs(count: int) -> list[tuple[int, int]]:
    """[start, stop) of each bar: one slice each up to MAX_SLICE_BARS, else equal runs."""
    bars = min(count, MAX_SLICE_BARS)
    edges = [round(i * count / bars) for i in range(bars + 1)] if bars else [0]
    return [(a, b) for a, b in itertools.pairwise(edges) if b > a]


def _slice_bar(
    series: SliceSeries, run: tuple[int, int], left: float, slot: float, base: float, frame: Frame
) -> str:
    """The bar of slices ``run`` = [start, stop): their minimum, red if any collapsed."""
    start, stop = run
    worst = min(series.sqnrs[start:stop])
    collapsed = any(index in series.collapsed for index in range(start, stop))
    top = frame.y_of(worst)
    y, height = min(top, base), max(abs(base - top), 1.0)
    which = f"slice {start}" if stop - start == 1 else f"slices {start}-{stop - 1} (worst)"
    tip = f"{which}: {db_text(worst)}" + (", collapsed" if collapsed else "")
    color = COLORS["collapsed"] if collapsed else COLORS["slice"]
    css = "bar collapsed" if collapsed else "bar"
    gap = slot * 0.12 if slot > 3 else 0.0
    return (
        f'<rect class="{css}" x="{left + gap:.2f}" y="{y:.1f}" '
        f'width="{max(slot - 2 * gap, 0.5):.2f}" height="{height:.1f}" fill="{color}">'
        f"<title>{escape(tip)}</title></rect>"
    )


# --- what would fix it ---------------------------------------------------------------------


# The fix chart is one narrow column (name, then its two bars), so that a phone shows it
# whole with legible text; the widest bar leaves room after it for its value.
FIX_WIDTH = 480
_FIX_LEFT, _FIX_BAR = 14, 480 - 14 - 110


def fix_chart(rows: Sequence[FixRow]) -> str:
    """Per node with a what-if run: output SQNR gained in float, and parameter bytes added."""
    row_height, top = 66, 34
    height = top + row_height * max(len(rows), 1) + 24
    largest_gain = max([abs(row.gain_db) for row in rows if math.isfinite(row.gain_db)] + [1.0])
    largest_cost = max([abs(row.extra_bytes) for row in rows] + [1])
    label = "What keeping each worst node in float would buy and cost"
    parts = [open_svg("fix", height, label, width=FIX_WIDTH)]
    parts.append(
        legend(
            [
                ("box", COLORS["gain"], "output SQNR gained (dB)"),
                ("box", COLORS["cost"], "parameter bytes added"),
            ],
            left=_FIX_LEFT,
        )
    )
    for position, row in enumerate(rows):
        gain = row.gain_db
        if not math.isfinite(gain):
            gain = math.copysign(largest_gain, gain)
        y = top + position * row_height
        gain_bar = _hbar(
            y + 18,
            _FIX_BAR * abs(gain) / largest_gain,
            COLORS["gain"] if gain >= 0 else COLORS["loss"],
            _signed_db(row.gain_db),
        )
        cost_bar = _hbar(
            y + 38,
            _FIX_BAR * abs(row.extra_bytes) / largest_cost,
            COLORS["cost"],
            _signed_size(row.extra_bytes),
        )
        name = text(_FIX_LEFT, y + 12, _short(row.node, 60), "name", anchor="start")
        parts.append(
            f'<g class="fix"><title>{escape(_fix_tip(row))}</title>{name}{gain_bar}{cost_bar}</g>'
        )
    parts.append(
        text(FIX_WIDTH / 2, height - 8, "worst nodes, one each (hover for details)", "axis")
    )
    parts.append("</svg>")
    return "".join(parts)


def _fix_tip(row: FixRow) -> str:
    return (
        f"{row.node} ({row.tensor}): output SQNR {db_text(row.int8_db)} -> "
        f"{db_text(row.kept_float_db)} with it in float; parameters "
        f"{_signed_size(row.extra_bytes)}"
    )


def _hbar(y: float, width: float, color: str, value: str) -> str:
    """A bar of ``width`` at ``y``, and its value after it."""
    width = max(width, 1.0)
    return (
        f'<rect class="hbar" x="{_FIX_LEFT}" y="{y:.1f}" width="{width:.1f}" '
        f'height="14" fill="{color}"/>'
        + text(_FIX_LEFT + width + 4, y + 12, value, "value", anchor="start")
    )


def _signed_db(value: float) -> str:
    if math.isinf(value):
        return "+\u221e dB" if value > 0 else "\u2212\u221e dB"
    rounded = round(value, 1)
    return f"{rounded:+.1f} dB".replace("-", "\u2212") if rounded else "0.0 dB"


def _signed_size(count: int) -> str:
    return ("+" if count >= 0 else "\u2212") + _size(abs(count))


def _size(count: int) -> str:
    for limit, unit in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if abs(count) >= limit:
            return f"{count / limit:.1f} {unit}"
    return f"{count} B"


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else "\u2026" + text[-(limit - 1) :]


def slice_series(output: str, whole_db: float, verdict: SliceVerdict) -> list[SliceSeries]:
    """One series per judged axis of ``verdict`` (§A.9), its collapsed slices and parts."""
    return [
        SliceSeries(
            output=output,
            axis=axis,
            sqnrs=tuple(values),
            collapsed=frozenset(index for along, index in verdict.collapsed if along == axis),
            whole_db=whole_db,
            parts=tuple(part for part in verdict.parts if part.axis == axis),
        )
        for axis, values in verdict.sqnrs
    ]
