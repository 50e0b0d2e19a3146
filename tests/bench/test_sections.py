"""The bookkeeping of the engine and codegen benchmark sections, on tiny synthetic values.

No model is quantized and no compiler runs: these run in ``make test``.
"""

from __future__ import annotations

import numpy as np
import pytest
from benchmarks import codegen, engine, run


def test_agreement_counts_equal_integers_and_the_largest_difference() -> None:
    measured = engine.Agreement()
    measured.add(np.array([0, 5, 255], np.uint8), np.array([0, 6, 255], np.uint8), "a")
    measured.add(np.array([[-128, 3]], np.int8), np.array([[-128, 3]], np.int8), "b")
    assert (measured.equal, measured.total, measured.largest, measured.worst) == (4, 5, 1, "a")
    assert measured.exact == pytest.approx(0.8)
    assert not measured.meets_goal()  # 80% equal is below 99.9%
    assert engine.percent(measured) == "80.00000%"
    assert engine.percent(engine.Agreement(3, 3)) == "100%"
    with pytest.raises(ValueError, match="shapes"):
        measured.add(np.zeros(2), np.zeros(3), "c")


def test_agreement_meets_the_goal_at_one_lsb_and_rare_differences() -> None:
    assert engine.Agreement(equal=9_999, total=10_000, largest=1).meets_goal()
    assert not engine.Agreement(equal=10_000 - 1, total=10_000, largest=2).meets_goal()


def test_float_outputs_quantize_back_to_their_integers() -> None:
    from eightbit.quant import QuantParams, dequantize_values

    params = QuantParams(np.float32(0.0371), np.int64(117), "uint8")
    stored = np.arange(256, dtype=np.uint8)
    assert np.array_equal(engine._stored(dequantize_values(stored, params), params), stored)


def test_interleaved_seconds_calls_runners_in_turn() -> None:
    calls: list[str] = []
    times = engine.interleaved_seconds(
        [lambda: calls.append("a"), lambda: calls.append("b")], runs=3, warmup=1
    )
    assert calls == ["a", "b", "a", "b", "a", "b", "a", "b"]
    assert [len(t) for t in times] == [3, 3]


def test_size_output_is_parsed() -> None:
    text = (
        "   text\t   data\t    bss\t    dec\t    hex\tfilename\n"
        "  53790\t      8\t  15680\t  69478\t  10f66\tm.o\n"
    )
    sizes = codegen.parse_size(text)
    assert (sizes.text, sizes.data, sizes.bss) == (53790, 8, 15680)
    assert (sizes.flash, sizes.ram) == (53798, 15688)
    with pytest.raises(ValueError, match="unexpected"):
        codegen.parse_size("nothing here")


def test_run_accepts_the_new_sections() -> None:
    assert run.parse_args(["--only", "engine,codegen"]).only == {"engine", "codegen"}
