"""``render_html``: ``ReportData`` into one self-contained HTML page (template.html).

The template is filled with ``string.Template``; every piece of text from a model (node
and tensor names, reasons) is HTML-escaped here. The page loads nothing: its style,
script and histograms (inline SVG) are all inside it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from html import escape
from importlib import resources
from string import Template

from eightbit._io import atomic_write_text
from eightbit.analysis import OutputMetrics
from eightbit.report.model import Decision, HistogramData, LayerRow, ReportData, WhatIfRow
from eightbit.report.pictures import depth_block, fix_block, multiples_block, slices_block
from eightbit.report.svg import histogram_svg

# Histograms of the worst activations are shown open; the rest start collapsed.
OPEN_HISTOGRAMS = 3
WORST_SHOWN = 10
_MISSING = "\u2014"


def render_html(data: ReportData) -> str:
    """The report as one HTML document."""
    template = Template(
        resources.files("eightbit.report").joinpath("template.html").read_text(encoding="utf-8")
    )
    summary = data.summary
    return template.substitute(
        title=escape(summary.title),
        version=escape(summary.version),
        meta=escape(
            f"{summary.float_model} (float) vs {summary.int8_model} (int8), "
            f"{summary.samples} samples"
        ),
        summary=_summary(data),
        depth=depth_block(data),
        slices=slices_block(summary.outputs),
        fix=fix_block(data),
        multiples=multiples_block(data.histograms),
        outputs=_outputs(summary.outputs),
        worst=_worst(data.worst[:WORST_SHOWN]),
        what_if=_what_if(data.what_if),
        layers=_layers(data.layers),
        histograms="\n".join(_histogram(h) for h in data.histograms),
        decisions=_decisions(data.decisions, summary.has_plan),
        notes=_notes(data.notes),
    )


def write_report(data: ReportData, path: str | os.PathLike[str]) -> None:
    """Render ``data`` and write it to ``path`` atomically."""
    atomic_write_text(path, render_html(data))


# --- number formats ----------------------------------------------------------------------


def _db(value: float | None) -> str:
    if value is None:
        return _MISSING
    if math.isinf(value):
        return "\u221e" if value > 0 else "\u2212\u221e"
    return f"{value:.1f}"


def _percent(value: float | None) -> str:
    if value is None:
        return _MISSING
    if value == 0:
        return "0"
    return f"{value:.2e}" if value < 0.01 else f"{value:.2f}"


def _fraction(value: float | None) -> str:
    return _MISSING if value is None else f"{100.0 * value:.2f}%"


def _bytes(count: int | None) -> str:
    if count is None:
        return _MISSING
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _value(value: float | None) -> str:
    """A data-value attribute for sorting: numbers as JavaScript reads them, None empty."""
    if value is None:
        return ""
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return repr(float(value))


# --- pieces ------------------------------------------------------------------------------


def _card(label: str, value: str, detail: str = "") -> str:
    extra = f'<div class="detail">{escape(detail)}</div>' if detail else ""
    return (
        f'<div class="card"><div class="label">{escape(label)}</div>'
        f'<div class="value">{escape(value)}</div>{extra}</div>'
    )


def _summary(data: ReportData) -> str:
    summary = data.summary
    cards = [
        _card(
            "parameters",
            f"{_bytes(summary.float_param_bytes)} \u2192 {_bytes(summary.int8_param_bytes)}",
            f"{summary.saved_percent:.1f}% saved",
        )
    ]
    if summary.float_file_bytes is not None and summary.int8_file_bytes is not None:
        saved = 100.0 * (1.0 - summary.int8_file_bytes / max(summary.float_file_bytes, 1))
        cards.append(
            _card(
                "file size",
                f"{_bytes(summary.float_file_bytes)} \u2192 {_bytes(summary.int8_file_bytes)}",
                f"{saved:.1f}% saved",
            )
        )
    first = summary.outputs[0]
    if first.top1_agreement is not None:
        top5 = "" if first.top5_agreement is None else f"top-5 {_fraction(first.top5_agreement)}"
        cards.append(_card("top-1 agreement", _fraction(first.top1_agreement), top5))
    if first.int8_accuracy is not None:
        cards.append(
            _card(
                "accuracy int8",
                _fraction(first.int8_accuracy),
                f"float {_fraction(first.float_accuracy)}",
            )
        )
    cards.append(_card("output SQNR", f"{_db(first.sqnr_db)} dB", f"output {first.name!r}"))
    if summary.latency is not None:
        latency = summary.latency
        cards.append(
            _card(
                "latency (1 thread, batch 1)",
                f"{latency.float_ms:.3f} \u2192 {latency.int8_ms:.3f} ms",
                f"int8 is {latency.speedup:.2f}\u00d7 float speed; median of {latency.runs} runs",
            )
        )
    cards.append(
        _card(
            "quantized tensors",
            str(summary.quantized_tensors),
            f"{summary.float_nodes} node(s) left in float",
        )
    )
    cards.append(_card("samples", str(summary.samples)))
    return '<div class="cards">' + "".join(cards) + "</div>"


def _table(
    table_id: str,
    headers: Sequence[tuple[str, bool]],
    rows: Iterable[str],
) -> str:
    """A sortable table; ``headers`` are (title, numeric) pairs."""
    numeric_th = '<th class="num" data-type="num">'
    head = "".join(
        f"{numeric_th if numeric else '<th>'}{escape(title)}</th>" for title, numeric in headers
    )
    return (
        f'<table class="sortable" id="{table_id}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _cell(
    text: str, *, value: float | None = None, numeric: bool = False, name: bool = False
) -> str:
    classes = "num" if numeric else "name" if name else ""
    attributes = f' class="{classes}"' if classes else ""
    if numeric:
        attributes += f' data-value="{_value(value)}"'
    return f"<td{attributes}>{escape(text)}</td>"


def _outputs(outputs: Sequence[OutputMetrics]) -> str:
    headers = [
        ("output", False),
        ("SQNR dB", True),
        ("cosine", True),
        ("max abs error", True),
        ("top-1 agreement", True),
        ("top-5 agreement", True),
        ("accuracy float", True),
        ("accuracy int8", True),
    ]
    custom_names = sorted({name for m in outputs for name in m.custom})
    headers += [(name, True) for name in custom_names]
    rows = []
    for m in outputs:
        cells = [
            _cell(m.name, name=True),
            _cell(_db(m.sqnr_db), value=m.sqnr_db, numeric=True),
            _cell(f"{m.cosine:.6f}", value=m.cosine, numeric=True),
            _cell(f"{m.max_abs_error:.4g}", value=m.max_abs_error, numeric=True),
            _cell(_fraction(m.top1_agreement), value=m.top1_agreement, numeric=True),
            _cell(_fraction(m.top5_agreement), value=m.top5_agreement, numeric=True),
            _cell(_fraction(m.float_accuracy), value=m.float_accuracy, numeric=True),
            _cell(_fraction(m.int8_accuracy), value=m.int8_accuracy, numeric=True),
        ]
        for name in custom_names:
            custom = m.custom.get(name)
            cells.append(
                _cell(_MISSING if custom is None else f"{custom:.6g}", value=custom, numeric=True)
            )
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return '<div class="scroll">' + _table("output-table", headers, rows) + "</div>"


def _worst(rows: Sequence[LayerRow]) -> str:
    if not rows:
        return '<p class="note">No quantized activations.</p>'
    headers = [
        ("rank", True),
        ("tensor", False),
        ("node", False),
        ("op", False),
        ("own SQNR dB", True),
        ("accumulated SQNR dB", True),
        ("overflow %", True),
        ("underflow %", True),
    ]
    body = [
        "<tr>"
        + _cell(str(row.worst_rank), value=row.worst_rank, numeric=True)
        + _cell(row.tensor or _MISSING, name=True)
        + _cell(row.node, name=True)
        + _cell(row.op_type)
        + _cell(_db(row.sqnr_own_db), value=row.sqnr_own_db, numeric=True)
        + _cell(_db(row.sqnr_accumulated_db), value=row.sqnr_accumulated_db, numeric=True)
        + _cell(_percent(row.overflow_percent), value=row.overflow_percent, numeric=True)
        + _cell(_percent(row.underflow_percent), value=row.underflow_percent, numeric=True)
        + "</tr>"
        for row in rows
    ]
    return '<div class="scroll">' + _table("worst-table", headers, body) + "</div>"


def _what_if(rows: Sequence[WhatIfRow]) -> str:
    if not rows:
        return ""
    headers = [
        ("tensor", False),
        ("node", False),
        ("own SQNR dB", True),
        ("only this quantized: SQNR dB", True),
        ("agreement", True),
        ("this node float: SQNR dB", True),
        ("agreement", True),
        ("all int8: SQNR dB", True),
    ]
    body = [
        "<tr>"
        + _cell(row.tensor, name=True)
        + _cell(row.node or "(input)", name=True)
        + _cell(_db(row.own_sqnr_db), value=row.own_sqnr_db, numeric=True)
        + _cell(_db(row.only_quantized_sqnr_db), value=row.only_quantized_sqnr_db, numeric=True)
        + _cell(
            _fraction(row.only_quantized_agreement),
            value=row.only_quantized_agreement,
            numeric=True,
        )
        + _cell(_db(row.kept_float_sqnr_db), value=row.kept_float_sqnr_db, numeric=True)
        + _cell(_fraction(row.kept_float_agreement), value=row.kept_float_agreement, numeric=True)
        + _cell(_db(row.int8_sqnr_db), value=row.int8_sqnr_db, numeric=True)
        + "</tr>"
        for row in rows
    ]
    return (
        '<details open id="what-if"><summary>What if: the worst layers alone, and kept in '
        'float (first output)</summary><div><p class="note">Only this quantized: the float '
        "model with this one tensor quantized. This node float: the int8 model with this "
        "tensor and its node's weights back in float.</p>"
        + '<div class="scroll">'
        + _table("what-if-table", headers, body)
        + "</div></div></details>"
    )


def _format(row: LayerRow) -> str:
    if row.dtype is None:
        return _MISSING
    if row.scale is None:
        return f"{row.dtype}, per channel"
    return f"{row.dtype} s={row.scale:.4g} z={row.zero_point}"


def _layers(rows: Sequence[LayerRow]) -> str:
    headers = [
        ("#", True),
        ("node", False),
        ("op", False),
        ("status", False),
        ("output tensor", False),
        ("format", False),
        ("own SQNR dB", True),
        ("accumulated SQNR dB", True),
        ("weight SQNR dB", True),
        ("overflow %", True),
        ("underflow %", True),
        ("params float", True),
        ("params int8", True),
        ("worst rank", True),
        ("reason", False),
    ]
    body = []
    for row in rows:
        status_class = f' class="{row.status}"' if row.status in ("float", "input") else ""
        rank = None if row.worst_rank is None else float(row.worst_rank)
        body.append(
            f"<tr{status_class}>"
            + _cell(str(row.index), value=row.index, numeric=True)
            + _cell(row.node, name=True)
            + _cell(row.op_type)
            + _cell(row.status)
            + _cell(row.tensor or _MISSING, name=True)
            + _cell(_format(row))
            + _cell(_db(row.sqnr_own_db), value=row.sqnr_own_db, numeric=True)
            + _cell(_db(row.sqnr_accumulated_db), value=row.sqnr_accumulated_db, numeric=True)
            + _cell(_db(row.weight_sqnr_db), value=row.weight_sqnr_db, numeric=True)
            + _cell(_percent(row.overflow_percent), value=row.overflow_percent, numeric=True)
            + _cell(_percent(row.underflow_percent), value=row.underflow_percent, numeric=True)
            + _cell(_bytes(row.float_bytes), value=row.float_bytes, numeric=True)
            + _cell(_bytes(row.int8_bytes), value=row.int8_bytes, numeric=True)
            + _cell(_MISSING if rank is None else str(row.worst_rank), value=rank, numeric=True)
            + _cell(row.reason or "")
            + "</tr>"
        )
    return _table("layer-table", headers, body)


def _histogram(data: HistogramData) -> str:
    opened = " open" if data.worst_rank is not None and data.worst_rank <= OPEN_HISTOGRAMS else ""
    rank = "" if data.worst_rank is None else f"#{data.worst_rank} \u00b7 "
    where = f"{data.kind}" + ("" if data.node is None else f" of {data.node}")
    channel = ", per channel (window: envelope over channels)" if data.per_channel else ""
    negative = "none" if data.negative_bit is None else f"2^{data.negative_bit:.2f}"
    details = (
        f"{data.dtype}{channel}; one LSB 2^{data.low_bit:.2f}; largest positive "
        f"{_power(data.positive_bit)}, largest negative magnitude {negative}; observed "
        f"[{data.minimum:.4g}, {data.maximum:.4g}] over {data.total} values, {data.zeros} zeros"
    )
    search = escape(f"{data.tensor} {data.node or ''} {data.kind}")
    overflow, underflow = _percent(data.overflow_percent), _percent(data.underflow_percent)
    summary = (
        f'{rank}<span class="name">{escape(data.tensor)}</span> \u2014 {escape(where)}; '
        f"overflow {overflow}%, underflow {underflow}%"
    )
    return (
        f'<details class="range" data-search="{search}"{opened}><summary>{summary}</summary>'
        f'<div>{histogram_svg(data)}<p class="note">{escape(details)}</p></div></details>'
    )


def _power(bit: float | None) -> str:
    return "none" if bit is None else f"2^{bit:.2f}"


def _decisions(decisions: Sequence[Decision], has_plan: bool) -> str:
    if not has_plan:
        return '<p class="note">No plan file beside the int8 model, so no decisions to show.</p>'
    headers = [("node", False), ("op", False), ("decision", False), ("reason", False)]
    body = []
    for d in decisions:
        if d.fused_into is not None:
            decision = f"folded into {d.fused_into}"
        else:
            decision = "int8" if d.quantized else "float"
            if d.fused_activation is not None:
                decision += f" (+ {d.fused_activation} folded)"
        row_class = "" if d.quantized else ' class="float"'
        body.append(
            f"<tr{row_class}>"
            + _cell(d.node, name=True)
            + _cell(d.op_type)
            + _cell(decision)
            + _cell(d.reason or "")
            + "</tr>"
        )
    fallbacks = sum(not d.quantized for d in decisions)
    opened = " open" if fallbacks else ""
    return (
        f"<details{opened}><summary>{len(decisions)} nodes, {fallbacks} kept in float</summary>"
        f'<div><div class="scroll">{_table("decision-table", headers, body)}</div></div></details>'
    )


def _notes(notes: Sequence[str]) -> str:
    if not notes:
        return ""
    items = "".join(f"<li>{escape(note)}</li>" for note in notes)
    return f'<section id="notes"><h2>Notes</h2><ul>{items}</ul></section>'
