"""The report's pictures as HTML blocks: each chart with its caption and a note.

``charts`` draws; this module picks the data out of ``ReportData`` and says in words what
a chart cannot (which output, why a chart is missing, that latency is not per node).
"""

from __future__ import annotations

from html import escape

from eightbit.analysis import OutputMetrics
from eightbit.report.charts import depth_chart, fix_chart, slice_chart, slice_series
from eightbit.report.model import HistogramData, ReportData
from eightbit.report.svg import histogram_svg

# The small multiples: this many worst activations' histograms, all open.
MULTIPLES = 12


def depth_block(data: ReportData) -> str:
    measured = [row for row in data.layers if row.sqnr_own_db is not None]
    if not measured:
        return '<p class="note">No quantized activation was measured: nothing to draw.</p>'
    return (
        f'<figure class="chart">{depth_chart(data.layers)}</figure>'
        '<p class="note">Accumulated SQNR: the int8 model\'s tensor against the float '
        "model's, every earlier error included; where it drops, error enters. Own SQNR: the "
        "noise this tensor's format adds by itself. Marks under the axis: nodes kept in float, "
        "16-bit outputs.</p>"
    )


def slices_block(outputs: tuple[OutputMetrics, ...]) -> str:
    figures, whole = [], []
    for metrics in outputs:
        verdict = metrics.slices
        if verdict is None or not verdict.sqnrs:
            whole.append(metrics.name)
            continue
        for series in slice_series(metrics.name, metrics.sqnr_db, verdict):
            caption = f"output {series.output}, axis {series.axis}: {len(series.sqnrs)} slices"
            if series.collapsed:
                caption += f", {len(series.collapsed)} collapsed"
            figures.append(
                f'<figure class="chart">{slice_chart(series)}'
                f"<figcaption>{escape(caption)}</figcaption></figure>"
            )
    note = (
        '<p class="note">The verdict judges every output slice by slice along axis 1 and the '
        "last axis: a slice whose int8 values carry no signal is collapsed (red), however "
        "good the whole output's SQNR looks.</p>"
    )
    if whole:
        note += (
            f'<p class="note">Judged whole (no fixed axis besides the samples): '
            f"{escape(', '.join(whole))}.</p>"
        )
    return note + "".join(figures)


def fix_block(data: ReportData) -> str:
    fixes = data.fixes
    if not fixes:
        return '<p class="note">No what-if runs (<code>--what-if 0</code>): nothing to weigh.</p>'
    latency = data.summary.latency
    timed = (
        "not timed"
        if latency is None
        else f"int8 {latency.int8_ms:.3f} ms vs float {latency.float_ms:.3f} ms"
    )
    return (
        f'<figure class="chart">{fix_chart(fixes)}</figure>'
        '<p class="note">For each of the worst layers: the first output\'s SQNR gained by '
        "keeping that node (and its weights) in float, measured by the what-if run, and the "
        "parameter bytes it would add. Latency is measured for whole models only "
        f"({escape(timed)}), not per node, so no latency cost is drawn.</p>"
    )


def multiples_block(histograms: tuple[HistogramData, ...]) -> str:
    worst = sorted(
        (h for h in histograms if h.worst_rank is not None and h.worst_rank <= MULTIPLES),
        key=lambda h: h.worst_rank or 0,
    )
    if not worst:
        return '<p class="note">No quantized activations.</p>'
    figures = "".join(
        f'<figure class="multiple"><figcaption>#{h.worst_rank} '
        f'<span class="name">{escape(h.tensor)}</span>; overflow '
        f"{h.overflow_percent:.2g}%, underflow {h.underflow_percent:.2g}%</figcaption>"
        f"{histogram_svg(h)}</figure>"
        for h in worst
    )
    return (
        '<p class="note">The log2 histograms of the worst activations (own SQNR), as in '
        "Dynamic ranges below: green band held by the format, orange rounds to zero, red is "
        f'clipped.</p><div class="multiples">{figures}</div>'
    )
