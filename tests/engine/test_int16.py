"""16x8 models on the integer engine (docs/numerics.md §E.13): every op family of
``tests/export/op_cases.py`` with its activations int16 — all of them, only the inputs
(int16 in, int8 out), or only the outputs (int8 in, int16 out) — against ONNX Runtime or
onnx.reference running the same QDQ model in float, and the wide requantization against
its definition.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import onnx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from onnx.reference import ReferenceEvaluator

from eightbit.engine import build_program, execute
from eightbit.engine.kernels.requantize import (
    Requantization,
    Rescale,
    requantize_wide_reference,
)
from eightbit.errors import ModelError
from eightbit.fixed import quantize_multiplier
from eightbit.graph.session import make_session
from eightbit.pipeline import quantize as quantize_pipeline
from eightbit.quant import QuantConfig
from tests.engine.helpers import PROPERTY, agreement
from tests.export.helpers import Quantized, quantize, run
from tests.export.op_cases import CASES
from tests.fixtures.targets import residual_net
from tests.fixtures.wide import wide_gemm

# Which tensors are int16: every activation, the op's inputs only, or its outputs only.
PLACEMENTS = ("all", "inputs", "outputs")
# ONNX Runtime has no int16 kernel for these ops (NOT_IMPLEMENTED), or, for int16 MatMul
# and Gemm, its optimized session differs from its own unoptimized run of the same model
# by up to ~100 LSB (onnx.reference and the unoptimized session agree with the engine):
# onnx.reference is the oracle there.
REFERENCE_ORACLE = {"DepthToSpace CRD", "DepthToSpace DCR", "Pad", "SpaceToDepth", "Gemm"}
REFERENCE_ORACLE |= {"Gemm transB", "MatMul", "MatMul batched weight", "MatMul activations"}
# ONNX Runtime sums the int16 op in float (§E.13): near a rounding boundary it lands on the
# other side. Measured: >= 97.9% equal, never more than 1 LSB.
CLOSE = 0.97


def _names(model: onnx.ModelProto, placement: str) -> tuple[str, ...]:
    outputs = {o.name for o in model.graph.output}
    tensors = [i.name for i in model.graph.input] + [o for n in model.graph.node for o in n.output]
    if placement == "inputs":
        tensors = [t for t in tensors if t not in outputs]
    elif placement == "outputs":
        tensors = [t for t in tensors if t in outputs]
    return tuple(tensors)


def _quantized(case: str, placement: str) -> tuple[Quantized, dict[str, np.ndarray]]:
    model, feeds = CASES[case]()
    names = _names(model, placement)
    try:
        return quantize(model, feeds, QuantConfig(int16=names)), feeds
    except Exception as error:  # value-preserving outputs are not separately quantized
        if "does not quantize" in str(error):
            pytest.skip(f"{names} are not all quantized activations in {case}")
        raise


def _has_int16(quantized: Quantized) -> bool:
    return any(p.dtype == "int16" for p in quantized.plan.tensors.values())


@pytest.mark.parametrize("placement", PLACEMENTS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_every_op_with_int16_activations_matches_the_float_qdq_model(
    case: str, placement: str
) -> None:
    quantized, feeds = _quantized(case, placement)
    if not _has_int16(quantized):
        pytest.skip("no int16 tensor in this placement")
    program = build_program(quantized.qdq, quantized.plan)
    assert program.integer_only
    ours = execute(program, feeds)
    naive = execute(program, feeds, reference=True)
    name = next(iter(ours))
    np.testing.assert_array_equal(ours[name], naive[name])  # fast == definition
    if case in REFERENCE_ORACLE:
        theirs = ReferenceEvaluator(quantized.qdq).run(None, feeds)[0]
    else:
        theirs = run(quantized.qdq, feeds, optimized=True)
    measured = agreement(ours[name], theirs, float(quantized.plan.tensors[name].scale))
    assert measured.largest <= 1 + 1e-3, str(measured)
    assert measured.exact >= CLOSE, str(measured)


def test_a_wide_sum_beyond_int32_matches_the_reference() -> None:
    """K = 1024 positive weights on an int16 input: sums beyond 2^31, exact in int64."""
    model, feeds = wide_gemm()
    quantized = quantize(model, feeds, QuantConfig(int16=("x",)))
    program = build_program(quantized.qdq, quantized.plan)
    stored = np.full((2, 1024), 32767, dtype=np.int16)
    step = program.steps[1]
    acc_bound = 1024 * 32767 * int(np.abs(step.weight).max())  # type: ignore[attr-defined]
    assert acc_bound > 2**31
    np.testing.assert_array_equal(step.run(stored)[0], step.run_reference(stored)[0])
    ours = execute(program, feeds)["y"]
    theirs = ReferenceEvaluator(quantized.qdq).run(None, feeds)[0]
    measured = agreement(ours, theirs, float(quantized.plan.tensors["y"].scale))
    assert measured.largest <= 1 + 1e-3, str(measured)


@pytest.fixture(scope="module")
def samples() -> np.ndarray:
    return np.random.default_rng(3).standard_normal((64, 3, 12, 12)).astype(np.float32)


def test_int16_tensors_between_8_bit_layers_equal_onnxruntime(samples) -> None:
    """Conv int8 -> int16, Conv int16 -> int8, an int8 + int16 Add, Relu on int16."""
    config = QuantConfig(int16=("r0", "s", "r2"))
    result = quantize_pipeline(residual_net(), {"x": samples}, config, improve="fast")
    feed = {"x": samples[:16]}
    ours = execute(build_program(result.model, result.plan), feed)["logits"]
    np.testing.assert_array_equal(ours, make_session(result.model).run(None, feed)[0])


def test_an_all_int16_network_stays_within_2_lsb_of_the_float_qdq_model(samples) -> None:
    """Seven int16 layers, each within 1 LSB of the float sum's rounding (§E.13)."""
    names = ("x", "r0", "r1", "c2", "s", "r2", "r3", "p", "rm", "logits")
    result = quantize_pipeline(residual_net(), {"x": samples}, QuantConfig(int16=names))
    feed = {"x": samples[:16]}
    ours = execute(build_program(result.model, result.plan), feed)["logits"]
    theirs = ReferenceEvaluator(result.model).run(None, feed)[0]
    measured = agreement(ours, theirs, float(result.plan.tensors["logits"].scale))
    assert measured.largest <= 2 + 1e-3 and measured.exact >= 0.8, str(measured)


def _exact(acc: int, multiplier: int, shift: int) -> int:
    """nearbyint(float32(acc) · S) in exact rationals (S = M · 2^(shift − 24))."""
    single = Fraction(float(np.float32(acc)))
    value = single * multiplier * Fraction(2) ** (shift - 24)
    product = Fraction(float(np.float32(value))) if value else Fraction(0)
    return round(product)  # Python rounds half to even


@PROPERTY
@given(
    acc=st.integers(-(2**39) + 1, 2**39 - 1),
    real=st.one_of(st.floats(2.0**-38, 2.0**6), st.floats(2.0**6, 2.0**30)),
)
def test_wide_requantization_is_float32_arithmetic(acc: int, real: float) -> None:
    multiplier, shift = quantize_multiplier(real)
    expected = _exact(acc, multiplier, shift)
    got = int(requantize_wide_reference(np.int64(acc), multiplier, shift))
    if abs(expected) < 2**37:
        assert got == expected
    else:  # saturated: beyond every stored range, the sign kept
        assert np.sign(got) == np.sign(expected) and abs(got) >= 2**37
    stored = Requantization.from_real(real, 0, "int16", wide=True).apply(np.int64(acc))
    assert int(stored) == min(max(expected, -(2**15)), 2**15 - 1)  # the fast path


def test_wide_accumulators_beyond_2_39_are_refused() -> None:
    with pytest.raises(ModelError, match="2\\^39"):
        requantize_wide_reference(np.int64(2**39), 2**23, 0)
    with pytest.raises(ModelError, match="2\\^39"):
        Rescale.from_real(0.5, wide=True).apply(np.int64(-(2**39)))


def test_a_scale_below_2_minus_39_is_refused_for_wide_sums() -> None:
    with pytest.raises(ModelError, match="below 2\\^-39"):
        Rescale.from_real(2.0**-45, wide=True)
