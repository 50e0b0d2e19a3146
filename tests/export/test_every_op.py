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

from collections.abc import Callable

import numpy as np
import onnx
import pytest
from onnx import helper
from onnx.utils import Extractor

from eightbit.graph import with_outputs
from eightbit.ops import supported_op_types
from tests.export.helpers import (
    Quantized,
    make_model,
    normal,
    output_scale,
    quantize,
    run,
    run_reference,
    session,
)

X = (1, 4, 6, 6)
FLOAT_LSB = 2.5
# Cases onnx.reference cannot run; ONNX Runtime without optimizations (which runs every
# DQ -> op -> Q as written, in float) is the QDQ oracle instead.
REFERENCE_FAILS = {"ConvTranspose grouped": "onnx 1.23 reshapes grouped weights wrongly"}
Case = tuple[onnx.ModelProto, dict[str, np.ndarray]]


def _after_conv(
    op: str, inputs: list[str], outputs: int = 1, constants: dict | None = None, **attrs: object
) -> Case:
    """x -> 1x1 Conv -> op: the Conv is quantized, so the value-preserving op is too."""
    names = [f"y{i}" for i in range(outputs)]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        helper.make_node(op, ["c", *inputs], names, name="op", **attrs),
    ]
    initializers = {"w": normal(4, 4, 1, 1, seed=1), **(constants or {})}
    model = make_model(nodes, [("x", X)], [(n, None) for n in names], initializers)
    return model, {"x": normal(*X, seed=2)}


def _alone(
    op: str, shapes: list[tuple[int, ...]], constants: dict | None = None, opset: int = 13, **attrs
) -> Case:
    names = [f"x{i}" for i in range(len(shapes))]
    const_names = list((constants or {}).keys())
    node = helper.make_node(op, [*names, *const_names], ["y"], name="op", **attrs)
    inputs = list(zip(names, shapes, strict=True))
    model = make_model([node], inputs, [("y", None)], constants, opset)
    return model, {name: normal(*shape, seed=i + 3) for i, (name, shape) in enumerate(inputs)}


def _weighted(
    op: str, x: tuple[int, ...], w: tuple[int, ...], bias: int | None = None, **attrs
) -> Case:
    constants = {"w": normal(*w, seed=5, scale=0.3)}
    if bias is not None:
        constants["b"] = normal(bias, seed=6, scale=0.1)
    return _alone(op, [x], constants, **attrs)


def _after_mul(op: str, inputs: list[str], constants: dict | None = None) -> Case:
    """x * 1.5 -> op: Mul does not absorb activations, so Relu and Clip stay standalone."""
    nodes = [
        helper.make_node("Mul", ["x", "k"], ["m"], name="mul"),
        helper.make_node(op, ["m", *inputs], ["y"], name="op"),
    ]
    initializers = {"k": np.float32(1.5), **(constants or {})}
    return make_model(nodes, [("x", X)], [("y", None)], initializers), {"x": normal(*X, seed=2)}


def _i64(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


CASES: dict[str, Callable[[], Case]] = {
    "Conv": lambda: _weighted("Conv", X, (6, 4, 3, 3), 6, pads=[1, 1, 1, 1]),
    "Conv grouped": lambda: _weighted("Conv", X, (6, 2, 3, 3), 6, group=2),
    "Conv depthwise": lambda: _weighted("Conv", X, (4, 1, 3, 3), 4, group=4, pads=[1] * 4),
    "ConvTranspose": lambda: _weighted("ConvTranspose", X, (4, 3, 3, 3), 3, strides=[2, 2]),
    "ConvTranspose grouped": lambda: _weighted("ConvTranspose", X, (4, 1, 2, 2), 2, group=2),
    "Gemm transB": lambda: _weighted("Gemm", (3, 16), (8, 16), 8, transB=1),
    "Gemm": lambda: _weighted("Gemm", (3, 16), (16, 8), 8),
    "MatMul": lambda: _weighted("MatMul", (2, 3, 16), (16, 8)),
    "MatMul batched weight": lambda: _weighted("MatMul", (2, 3, 16), (2, 16, 8)),
    "MatMul activations": lambda: _alone("MatMul", [(1, 2, 3, 4), (1, 2, 4, 5)]),
    "Add": lambda: _alone("Add", [X, X]),
    "Add constant": lambda: _alone("Add", [X], {"k": normal(1, 4, 1, 1, seed=9)}),
    "Mul": lambda: _alone("Mul", [X, X]),
    "Concat": lambda: _alone("Concat", [X, (1, 2, 6, 6)], axis=1),
    "MaxPool": lambda: _after_conv("MaxPool", [], kernel_shape=[2, 2], strides=[2, 2]),
    "AveragePool": lambda: _alone("AveragePool", [X], kernel_shape=[3, 3], pads=[1] * 4),
    "GlobalAveragePool": lambda: _alone("GlobalAveragePool", [X]),
    "Relu": lambda: _after_mul("Relu", []),
    "Clip": lambda: _after_mul("Clip", ["lo", "hi"], {"lo": np.float32(0), "hi": np.float32(1)}),
    "LeakyRelu": lambda: _alone("LeakyRelu", [X], alpha=0.1),
    "Sigmoid": lambda: _alone("Sigmoid", [X]),
    "HardSigmoid": lambda: _alone("HardSigmoid", [X]),
    "HardSwish": lambda: _alone("HardSwish", [X], opset=14),
    "Resize nearest": lambda: _after_conv(
        "Resize", ["", "s"], constants={"s": np.array([1, 1, 2, 2], np.float32)}, mode="nearest"
    ),
    "Resize linear": lambda: _after_conv(
        "Resize", ["", "s"], constants={"s": np.array([1, 1, 2, 2], np.float32)}, mode="linear"
    ),
    "Reshape": lambda: _after_conv("Reshape", ["shape"], constants={"shape": _i64(1, -1)}),
    "Flatten": lambda: _after_conv("Flatten", []),
    "Transpose": lambda: _after_conv("Transpose", [], perm=[0, 2, 3, 1]),
    "Squeeze": lambda: _after_conv("Squeeze", ["axes"], constants={"axes": _i64(0)}),
    "Unsqueeze": lambda: _after_conv("Unsqueeze", ["axes"], constants={"axes": _i64(1)}),
    "Split": lambda: _after_conv("Split", [], outputs=2, axis=1),
    "Slice": lambda: _after_conv(
        "Slice", ["b", "e", "a"], constants={"b": _i64(1), "e": _i64(3), "a": _i64(1)}
    ),
    "Pad": lambda: _after_conv("Pad", ["pads"], constants={"pads": _i64(0, 0, 1, 1, 0, 0, 1, 1)}),
    "SpaceToDepth": lambda: _after_conv("SpaceToDepth", [], blocksize=2),
    "DepthToSpace DCR": lambda: _after_conv("DepthToSpace", [], blocksize=2),
    "DepthToSpace CRD": lambda: _after_conv("DepthToSpace", [], blocksize=2, mode="CRD"),
}
VALUE_PRESERVING = {"MaxPool", "Relu", "Clip", "Reshape", "Flatten", "Transpose", "Squeeze"}
VALUE_PRESERVING |= {"Unsqueeze", "Split", "Slice", "Pad", "Resize nearest", "Resize linear"}
VALUE_PRESERVING |= {"SpaceToDepth", "DepthToSpace DCR", "DepthToSpace CRD"}


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
