"""The pieces every report chart is built of: its frame, dB axis, ticks, legend and text.

A chart is ``WIDTH`` units wide in its ``viewBox`` and scales to its container; text
and axes are drawn in ``currentColor`` so that the page's colours (dark mode too) apply.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

WIDTH = 720
FONT = 12


@dataclass(frozen=True)
class Frame:
    """The plot area inside a chart of ``WIDTH`` × ``height`` and its dB axis."""

    height: int
    low_db: float
    high_db: float
    left: int = 52
    right: int = 14
    top: int = 30
    bottom: int = 46
    clipped: bool = False  # values above high_db are drawn at the top

    @property
    def plot_width(self) -> float:
        return WIDTH - self.left - self.right

    @property
    def plot_bottom(self) -> float:
        return self.height - self.bottom

    def y_of(self, db: float) -> float:
        """The y of ``db``, infinities and values outside the axis drawn at its ends."""
        clipped = min(max(db, self.low_db), self.high_db)
        share = (clipped - self.low_db) / (self.high_db - self.low_db)
        return self.plot_bottom - share * (self.plot_bottom - self.top)


def db_axis(values: Sequence[float | None], *, include_zero: bool = False) -> tuple[float, float]:
    """An axis of whole tens of dB covering the finite ``values`` (0 to 50 when none)."""
    finite = [value for value in values if value is not None and math.isfinite(value)]
    if include_zero:
        finite.append(0.0)
    if not finite:
        return 0.0, 50.0
    low = 10.0 * math.floor(min(finite) / 10.0)
    high = 10.0 * math.ceil(max(finite) / 10.0)
    return (low, high + 10.0) if high <= low else (low, high)


def open_svg(kind: str, height: int, label: str, width: int = WIDTH) -> str:
    return (
        f'<svg class="chart chart-{kind}" viewBox="0 0 {width} {height}" width="100%" '
        f'role="img" aria-label="{escape(label)}" font-size="{FONT}">'
        f"<title>{escape(label)}</title>"
    )


def db_grid(frame: Frame) -> list[str]:
    """Horizontal lines every 10 dB (fewer when the axis is tall), labelled, and its title."""
    step = 10.0 * max(1, math.ceil((frame.high_db - frame.low_db) / 80.0))
    parts = []
    level = frame.low_db
    while level <= frame.high_db + 1e-9:
        y = frame.y_of(level)
        parts.append(
            f'<line x1="{frame.left}" y1="{y:.1f}" x2="{frame.left + frame.plot_width:.1f}" '
            f'y2="{y:.1f}" stroke="currentColor" stroke-opacity="0.15"/>'
        )
        label = f"{level:.0f}"
        if frame.clipped and level + step > frame.high_db + 1e-9:
            label = "\u2265" + label  # the top of a clipped axis: this or more
        parts.append(text(frame.left - 6, y + 4, label, "tick", anchor="end"))
        level += step
    middle = (frame.top + frame.plot_bottom) / 2
    parts.append(
        f'<text class="axis" x="14" y="{middle:.1f}" text-anchor="middle" fill="currentColor" '
        f'transform="rotate(-90 14 {middle:.1f})">SQNR (dB)</text>'
    )
    parts.append(
        f'<line x1="{frame.left}" y1="{frame.plot_bottom:.1f}" '
        f'x2="{frame.left + frame.plot_width:.1f}" y2="{frame.plot_bottom:.1f}" '
        'stroke="currentColor"/>'
    )
    return parts


def x_ticks(
    centres: Sequence[float], frame: Frame, runs: Sequence[tuple[int, int]] | None = None
) -> list[str]:
    """About eight index labels under the axis: node or slice indices."""
    step = max(1, math.ceil(len(centres) / 8))
    y = frame.plot_bottom + (26 if frame.bottom > 50 else 16)
    return [
        text(x, y, str(i if runs is None else runs[i][0]), "tick")
        for i, x in enumerate(centres)
        if i % step == 0
    ]


def legend(entries: Sequence[tuple[str, str, str]], *, left: float = 52.0) -> str:
    parts, x = ['<g class="legend">'], left
    for shape, color, label in entries:
        if shape == "box":
            parts.append(f'<rect x="{x:.1f}" y="8" width="12" height="12" fill="{color}"/>')
        else:
            dashes = ' stroke-dasharray="5 3"' if shape == "dash" else ""
            parts.append(
                f'<line x1="{x:.1f}" y1="14" x2="{x + 14:.1f}" y2="14" stroke="{color}" '
                f'stroke-width="2"{dashes}/>'
            )
        parts.append(text(x + 18, 18, label, "legend", anchor="start"))
        x += 34 + 7.4 * len(label)
    parts.append("</g>")
    return "".join(parts)


def line_path(points: Sequence[tuple[float, float] | None]) -> str:
    """An SVG path through ``points``, broken where a point is missing."""
    commands, pen_down = [], False
    for point in points:
        if point is None:
            pen_down = False
            continue
        commands.append(f"{'L' if pen_down else 'M'}{point[0]:.1f} {point[1]:.1f}")
        pen_down = True
    return " ".join(commands) or "M0 0"


def db_text(value: float | None) -> str:
    if value is None:
        return "not measured"
    if math.isinf(value):
        return "\u221e dB (no error)" if value > 0 else "\u2212\u221e dB"
    return f"{value:.1f} dB"


def text(x: float, y: float, text: str, css: str, *, anchor: str = "middle") -> str:
    return (
        f'<text class="{css}" x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" '
        f'fill="currentColor">{escape(text)}</text>'
    )
