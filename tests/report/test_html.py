"""The HTML page: sections, self-contained, escaped, and usable with 100+ layers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from eightbit.analysis import RunOptions
from eightbit.quant import QuantConfig
from eightbit.report import ReportData, build_report, render_html, write_report
from eightbit.report.pictures import MULTIPLES
from tests.analysis.helpers import classifier, images, quantize, with_scale
from tests.report.helpers import deep_report

PICTURES = ("depth", "slices", "fix", "multiples")
SECTIONS = ("summary", *PICTURES, "outputs", "worst", "layers", "ranges", "decisions")


@pytest.fixture(scope="module")
def deep() -> ReportData:
    return deep_report(120)


def test_sections_summary_and_plan_decisions(deep: ReportData) -> None:
    page = render_html(deep)
    for section in SECTIONS:
        assert f'<section id="{section}">' in page
    # 120 conv nodes, the flatten and the head; the Relus were folded into the convs.
    assert len(deep.layers) == 1 + 122  # plus the quantized input
    assert page.count("<tr") - page.count("<thead><tr>") >= len(deep.layers)
    assert "folded into block0/conv" in page
    assert deep.summary.has_plan and deep.summary.latency is not None
    # 2×2 weights: each channel's float32 scale costs more than int8 saves, and the report says so.
    assert deep.summary.saved_percent < 0


def test_large_models_stay_readable(deep: ReportData) -> None:
    page = render_html(deep)
    assert page.count('<details class="range"') == len(deep.histograms) >= 240
    assert page.count('<details class="range" data-search=') - page.count(" open>") >= 237
    assert 'class="sortable" id="layer-table"' in page
    assert len(page) < 2_000_000  # about 6 KB per layer


def test_page_loads_nothing_from_anywhere(deep: ReportData) -> None:
    page = render_html(deep)
    assert "http" not in page  # no URL of any kind (inline SVG needs no xmlns either)
    assert not re.search(r"\b(src|srcset|action)=", page)
    assert not re.search(r"url\(|@import", page)
    hrefs = re.findall(r'href="([^"]*)"', page)
    assert hrefs and all(href.startswith("#") for href in hrefs)


def test_names_from_the_model_are_escaped() -> None:
    model = classifier()
    for node in model.graph.node:
        node.name = f"<b>{node.name}</b>&"
    data = images(8)
    quantized = quantize(model, data)
    page = render_html(
        build_report(model, quantized.qdq, {"input": data}, latency_runs=0, what_if=0)
    )
    assert "<b>" not in page
    assert "&lt;b&gt;conv1&lt;/b&gt;&amp;" in page


def test_without_plan_and_a_planted_bad_layer(tmp_path: Path) -> None:
    model = classifier()
    quantized = quantize(model, images(32))
    planted = with_scale(quantized.qdq, "r2", 1 / 16)
    data = build_report(
        model,
        planted,
        {"input": images(16)},
        latency_runs=0,
        options=RunOptions(batch_size=8),
    )
    assert data.worst[0].tensor == "r2" and data.worst[0].worst_rank == 1
    assert data.worst[0].overflow_percent is not None and data.worst[0].overflow_percent > 5
    assert data.decisions == () and any("No plan" in note for note in data.notes)
    write_report(data, tmp_path / "report.html")
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    # The histograms of the three worst layers start open, the planted one among them.
    opened = re.findall(r'<details class="range" data-search="(\S+)[^"]*" open>', page)
    assert len(opened) == 3 and "r2" in opened


def test_the_report_opens_with_pictures(deep: ReportData) -> None:
    page = render_html(deep)
    order = [page.index(f'<section id="{name}">') for name in (*PICTURES, "outputs")]
    assert order == sorted(order) and page.index('<section id="summary">') < order[0]
    depth = _section(page, "depth")
    assert depth.count('<g class="node"') == len(deep.layers)
    slices = _section(page, "slices")
    assert slices.count('class="bar"') == 3  # the head's 3 logits along axis 1
    fix = _section(page, "fix")
    assert fix.count('<g class="fix">') == len(deep.what_if) == len(deep.fixes) == 1
    (entry,) = deep.fixes
    row = next(row for row in deep.layers if row.node == entry.node)
    assert entry.extra_bytes == row.float_bytes - row.int8_bytes
    assert entry.gain_db == deep.what_if[0].kept_float_sqnr_db - deep.what_if[0].int8_sqnr_db
    multiples = _section(page, "multiples")
    assert multiples.count('<figure class="multiple">') == MULTIPLES
    assert multiples.count('<svg viewBox="0 0 640 180" width="100%" role="img" class="hist"') == 12
    ranks = re.findall(r"<figcaption>#(\d+) ", multiples)
    assert ranks == [str(rank) for rank in range(1, 13)]
    assert "<details" not in multiples  # open by default: nothing to unfold


def _section(page: str, name: str) -> str:
    start = page.index(f'<section id="{name}">')
    return page[start : page.index("</section>", start)]


def test_a_16_bit_output_is_marked_though_not_analysed() -> None:
    model = classifier()
    quantized = quantize(model, images(16), QuantConfig(int16=("r2",)))
    data = build_report(
        model, quantized.qdq, {"input": images(8)}, plan=quantized.plan, latency_runs=0,
        what_if=0,
    )  # fmt: skip
    conv2 = next(row for row in data.layers if row.node == "conv2")
    assert conv2.dtype == "int16" and conv2.scale is not None and conv2.sqnr_own_db is None
    assert any("stores int16" in note for note in data.notes)
    # r2 in int16 makes conv2's output (the Relu's input) int16 too; the rest stays 8-bit.
    assert [row.node for row in data.layers if row.dtype == "int16"] == ["conv2", "relu2"]
    depth = re.findall(r'<g class="node" data-kind="(\w+)"><title>#\d+ (\S+)', render_html(data))
    assert [node for kind, node in depth if kind == "int16"] == ["conv2", "relu2"]
