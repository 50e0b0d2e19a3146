"""Every op of the supported list quantizes, runs in ONNX Runtime, and stays close to float.

Each case is a small model in which the op under test is quantized (value-preserving ops
get a quantized Conv or Mul before them: they are only quantized next to quantized nodes).
Errors are in LSBs of the output scale:

- ONNX Runtime with its int8 kernels vs onnx.reference running the same QDQ model in numpy
  (the exact QDQ semantics): at most 1 LSB. Integer kernels accumulate exactly and round
  once; the reference rounds float32 sums, which can cross a rounding boundary by one step.
- Value-preserving ops add no error of their own: the int8 output equals the float op
  applied to the op's dequantized input, exactly; linear Resize and a Clip bound that falls
  between two grid points round once (0.5 LSB).
- Computing ops vs the float model: at most ``FLOAT_LSB``. The error is the rounding of the
  inputs, weights and output; the largest measured on these seeded models is 1.84 LSB
  (depthwise Conv). A wrong scale, zero point or channel axis costs tens of LSBs.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx.utils import Extractor

from eightbit.graph import with_outputs
from eightbit.ops import supported_op_types
from tests.export.helpers import (
    Quantized,
    output_scale,
    quantize,
    run,
    run_reference,
    session,
)
from tests.export.op_cases import CASES, VALUE_PRESERVING

FLOAT_LSB = 2.5
# Cases onnx.reference cannot run; ONNX Runtime without optimizations (which runs every
# DQ -> op -> Q as written, in float) is the QDQ oracle instead.
REFERENCE_FAILS = {"ConvTranspose grouped": "onnx 1.23 reshapes grouped weights wrongly"}


def test_the_cases_cover_every_supported_op() -> None:
    covered = {name.split()[0] for name in CASES}
    assert covered == set(supported_op_types())


@pytest.mark.parametrize("case", sorted(CASES))
def test_op_quantizes_and_runs_in_onnxruntime(case: str) -> None:
    model, feeds = CASES[case]()
    quantized = quantize(model, feeds)
    assert quantized.plan.decision("op").quantized, quantized.plan.decision("op").reason
    assert quantized.plan.fallbacks() == ()

    int8 = run(quantized.qdq, feeds, optimized=True)
    if case in REFERENCE_FAILS:
        reference = run(quantized.qdq, feeds, optimized=False)
    else:
        reference = run_reference(quantized.qdq, feeds)
    lsb = output_scale(quantized)
    assert int8.shape == reference.shape
    # 1e-5: float32 slack on values that are exact multiples of the scale.
    assert np.max(np.abs(int8 - reference)) <= 1.0 * lsb * (1 + 1e-5)


@pytest.mark.parametrize("case", sorted(set(CASES) - VALUE_PRESERVING))
def test_computing_op_stays_close_to_float(case: str) -> None:
    model, feeds = CASES[case]()
    quantized = quantize(model, feeds)
    expected = run(quantized.float_model, feeds, optimized=False)
    int8 = run(quantized.qdq, feeds, optimized=True)
    assert np.max(np.abs(int8 - expected)) <= FLOAT_LSB * output_scale(quantized)


@pytest.mark.parametrize("case", sorted(VALUE_PRESERVING))
def test_value_preserving_op_adds_no_error(case: str) -> None:
    model, feeds = CASES[case]()
    quantized = quantize(model, feeds)
    op_input = next(n for n in quantized.float_model.graph.node if n.name == "op").input[0]
    outputs = [value.name for value in quantized.float_model.graph.output]
    # The QDQ model's tensor ``op_input`` is the dequantized input the op reads.
    dequantized = session(with_outputs(quantized.qdq, [op_input]), optimized=False).run(
        [op_input], feeds
    )[0]
    op_alone = Extractor(quantized.float_model).extract_model([op_input], outputs)
    expected = session(op_alone, optimized=False).run(None, {op_input: dequantized})
    int8 = session(quantized.qdq, optimized=True).run(None, feeds)
    # Linear Resize rounds its interpolation; Clip rounds a bound that is off the grid.
    rounds_once = case in ("Resize linear", "Clip")
    bound = 0.5 * _lsb(quantized) * (1 + 1e-5) if rounds_once else 0.0
    for want, got in zip(expected, int8, strict=True):
        assert np.max(np.abs(got - want)) <= bound


def _lsb(quantized: Quantized) -> float:
    return output_scale(quantized)
