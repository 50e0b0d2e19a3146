"""The picture blocks say in words what they cannot draw: no slices, no what-ifs, no layers."""

from __future__ import annotations

import dataclasses

from eightbit.analysis import OutputMetrics
from eightbit.report import ReportData
from eightbit.report.pictures import depth_block, fix_block, multiples_block, slices_block
from tests.report.helpers import deep_report


def test_an_output_without_slices_is_named_judged_whole() -> None:
    whole = OutputMetrics(name="score<1>", samples=4, sqnr_db=30.0, cosine=1.0, max_abs_error=0.1)
    block = slices_block((whole,))
    assert "Judged whole" in block and "score&lt;1&gt;" in block and "<svg" not in block


def test_without_what_ifs_or_layers_the_blocks_say_so() -> None:
    data: ReportData = deep_report(3)
    bare = dataclasses.replace(data, what_if=(), layers=(), histograms=())
    assert "<svg" not in fix_block(bare) and "--what-if 0" in fix_block(bare)
    assert "<svg" not in depth_block(bare) and "nothing to draw" in depth_block(bare)
    assert multiples_block(()) == '<p class="note">No quantized activations.</p>'
    assert "<svg" in fix_block(data) and "not per node" in fix_block(data)
