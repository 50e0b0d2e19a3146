"""eightbit.report: one self-contained HTML page of what int8 cost, and where.

``build_report`` runs the analysis (``eightbit.analysis.validate``) and joins its results
into ``ReportData`` (``model``: plain frozen values); ``render_html`` fills the one
template with them (``html``; the opening pictures from ``pictures``, drawn by ``charts``;
inline SVG histograms from ``svg``); ``write_report`` writes the page atomically.
"""

from eightbit.report.build import build_report, report_data
from eightbit.report.html import render_html, write_report
from eightbit.report.model import (
    Decision,
    HistogramData,
    LayerRow,
    ReportData,
    Summary,
    WhatIfRow,
)

__all__ = [
    "Decision",
    "HistogramData",
    "LayerRow",
    "ReportData",
    "Summary",
    "WhatIfRow",
    "build_report",
    "render_html",
    "report_data",
    "write_report",
]
