"""Every fast kernel equals its naive reference bit for bit (Hypothesis, extremes included).

The references are plain int64 loops; the fast kernels sum int8 products in float32 BLAS,
slide windows as strided views and requantize whole arrays. Inputs include the ends of
each type (0, 255, -128, 127), zero points at the ends, and multipliers whose shifts sit
at the ends of the range.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from eightbit.engine.kernels.activation import prepare_activation
from eightbit.engine.kernels.concat import prepare_concat
from eightbit.engine.kernels.conv import prepare_conv
from eightbit.engine.kernels.elementwise import prepare_elementwise
from eightbit.engine.kernels.gemm import FLOAT32_EXACT, exact_matmul, prepare_matmul
from eightbit.engine.kernels.pool import prepare_pool
from eightbit.engine.program import Step
from tests.engine.helpers import PROPERTY, activation, constant, prepared

TYPES = {"uint8": (0, 255), "int8": (-128, 127)}
# Output/input scale ratios from tiny (shift far negative) to large (shift near its top).
SCALES = st.sampled_from([2.0**-30, 1e-4, 0.0123, 0.5, 1.0, 3.7, 2.0**12])
# Output scales keep every ratio below 2^31, the largest multiplier requantization takes.
OUT_SCALES = st.sampled_from([1e-3, 0.0371, 0.5, 1.0, 100.0])


def _integers(draw: Any, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    low, high = TYPES[dtype]
    kind = draw(st.sampled_from(["random", "low", "high", "ends"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind == "low":
        values = np.full(shape, low)
    elif kind == "high":
        values = np.full(shape, high)
    elif kind == "ends":
        values = rng.choice([low, high], size=shape)
    else:
        values = rng.integers(low, high + 1, size=shape)
    return values.astype(np.dtype(dtype))


def _zero_point(draw: Any, dtype: str) -> int:
    low, high = TYPES[dtype]
    return int(draw(st.one_of(st.sampled_from([low, high]), st.integers(low, high))))


def _same(step: Step, *args: np.ndarray) -> None:
    fast, reference = step.run(*args), step.run_reference(*args)
    assert len(fast) == len(reference)
    for got, want in zip(fast, reference, strict=True):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


@st.composite
def conv_cases(draw: Any) -> tuple[Step, np.ndarray]:
    rank = draw(st.integers(1, 2))
    group = draw(st.sampled_from([1, 2]))
    depthwise = draw(st.booleans())
    channels = group * draw(st.integers(1, 3))
    if depthwise:
        group = channels
    out_channels = group * (1 if depthwise else draw(st.integers(1, 3)))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(rank))
    strides = [draw(st.integers(1, 2)) for _ in range(rank)]
    dilations = [draw(st.integers(1, 2)) for _ in range(rank)]
    pads = [draw(st.integers(0, k - 1)) for k in kernel] * 2
    spatial = tuple(draw(st.integers(k * 2, 7)) for k in kernel)
    x_type = draw(st.sampled_from(["uint8", "int8"]))
    x = _integers(draw, (draw(st.integers(1, 2)), channels, *spatial), x_type)
    weight = _integers(draw, (out_channels, channels // group, *kernel), "int8")
    w_scales = [draw(SCALES) for _ in range(out_channels)]
    bias = np.random.default_rng(0).integers(-(2**20), 2**20, out_channels)
    out_type = draw(st.sampled_from(["uint8", "int8"]))
    op_type = draw(st.sampled_from(["Conv", "ConvTranspose"]))
    if op_type == "ConvTranspose":
        weight = _integers(draw, (channels, out_channels // group, *kernel), "int8")
        # Grouped ConvTranspose weights are per tensor (axis 1 counts channels in a group).
        w_scales = w_scales if group == 1 else [w_scales[0]] * out_channels
        strides = [min(s, k) for s, k in zip(strides, kernel, strict=True)]
        weight_scales: Any = w_scales if group == 1 else w_scales[0]
    else:
        weight_scales = w_scales
    node = prepared(
        op_type,
        [
            activation("x", 1.0, _zero_point(draw, x_type), x_type),
            constant("w", weight, weight_scales, axis=0 if op_type == "Conv" else 1),
            constant("b", bias, w_scales, "int32"),  # the accumulator's unit: s_x · s_w
        ],
        [activation("y", 1.0, _zero_point(draw, out_type), out_type)],
        group=group,
        strides=strides,
        dilations=dilations,
        pads=pads,
    )
    return prepare_conv(node), x


@PROPERTY
@given(case=conv_cases())
def test_conv_and_conv_transpose(case: tuple[Step, np.ndarray]) -> None:
    step, x = case
    _same(step, x)


@st.composite
def matmul_cases(draw: Any) -> tuple[Step, tuple[np.ndarray, ...]]:
    a_type = draw(st.sampled_from(["uint8", "int8"]))
    batch = tuple(draw(st.lists(st.integers(1, 2), max_size=2)))
    rows, depth, columns = (draw(st.integers(1, 5)) for _ in range(3))
    a = _integers(draw, (*batch, rows, depth), a_type)
    out = activation("y", draw(OUT_SCALES), _zero_point(draw, "uint8"), "uint8")
    a_operand = activation("a", 1.0, _zero_point(draw, a_type), a_type)
    if draw(st.booleans()):  # two activations
        b = _integers(draw, (*batch, depth, columns), a_type)
        b_operand = activation("b", 1.0, _zero_point(draw, a_type), a_type)
        return prepare_matmul(prepared("MatMul", [a_operand, b_operand], [out])), (a, b)
    weight = _integers(draw, (depth, columns), "int8")
    scales = [draw(SCALES) for _ in range(columns)]
    if draw(st.booleans()):
        bias = constant("c", np.arange(columns) * 1000 - 7, scales, "int32")
        node = prepared(
            "Gemm",
            [a_operand, constant("w", weight.T.copy(), scales), bias],
            [out],
            transB=1,
        )
        return prepare_matmul(node), (a.reshape(-1, depth),)
    node = prepared("MatMul", [a_operand, constant("w", weight, scales, axis=1)], [out])
    return prepare_matmul(node), (a,)


@PROPERTY
@given(case=matmul_cases())
def test_matmul_and_gemm(case: tuple[Step, tuple[np.ndarray, ...]]) -> None:
    step, args = case
    _same(step, *args)


@pytest.mark.parametrize("depth", [1, 517, 518, 519, 1100, 4608])
def test_exact_matmul_is_exact_where_one_float32_sum_is_not(depth: int) -> None:
    a = np.full((2, depth), 255, dtype=np.float32)
    b = np.full((depth, 3), 127, dtype=np.float32)
    a[1, ::3] = 254  # sums that are not multiples of a large power of two
    b[::5, 1] = -128
    expected = a.astype(np.int64) @ b.astype(np.int64)
    np.testing.assert_array_equal(exact_matmul(a, b, 255 * 128), expected)
    if depth * 255 * 128 > 2 * FLOAT32_EXACT:  # the check can fail: plain float32 is wrong
        assert not np.array_equal((a @ b).astype(np.int64), expected)


@st.composite
def elementwise_cases(draw: Any) -> tuple[Step, tuple[np.ndarray, ...]]:
    dtype = draw(st.sampled_from(["uint8", "int8"]))
    op_type = draw(st.sampled_from(["Add", "Mul"]))
    a = _integers(draw, (2, 3, 4), dtype)
    b = _integers(draw, draw(st.sampled_from([(2, 3, 4), (3, 1), (1,)])), dtype)
    operands = [activation(name, draw(SCALES), _zero_point(draw, dtype), dtype) for name in "ab"]
    product = float(operands[0].params.scale) * float(operands[1].params.scale)
    out_scale = max(draw(OUT_SCALES), product * 2.0**-30)
    out = activation("y", out_scale, _zero_point(draw, dtype), dtype)
    return prepare_elementwise(prepared(op_type, operands, [out])), (a, b)


@PROPERTY
@given(case=elementwise_cases())
def test_add_and_mul(case: tuple[Step, tuple[np.ndarray, ...]]) -> None:
    step, args = case
    _same(step, *args)


@st.composite
def concat_cases(draw: Any) -> tuple[Step, tuple[np.ndarray, ...]]:
    dtype = draw(st.sampled_from(["uint8", "int8"]))
    out = activation("y", draw(OUT_SCALES), _zero_point(draw, dtype), dtype)
    operands, arrays = [], []
    for i in range(draw(st.integers(1, 3))):
        same = draw(st.booleans())
        operands.append(
            activation(f"x{i}", float(out.params.scale), int(out.params.zero_point), dtype)
            if same
            else activation(f"x{i}", draw(SCALES), _zero_point(draw, dtype), dtype)
        )
        arrays.append(_integers(draw, (2, draw(st.integers(1, 3)), 3), dtype))
    return prepare_concat(prepared("Concat", operands, [out], axis=1)), tuple(arrays)


@PROPERTY
@given(case=concat_cases())
def test_concat(case: tuple[Step, tuple[np.ndarray, ...]]) -> None:
    step, args = case
    _same(step, *args)


@st.composite
def pool_cases(draw: Any) -> tuple[Step, np.ndarray]:
    dtype = draw(st.sampled_from(["uint8", "int8"]))
    op_type = draw(st.sampled_from(["MaxPool", "AveragePool", "GlobalAveragePool"]))
    kernel = [draw(st.integers(1, 3)) for _ in range(2)]
    spatial = [draw(st.integers(k + 1, 7)) for k in kernel]
    x = _integers(draw, (2, 3, *spatial), dtype)
    x_operand = activation("x", 0.05, _zero_point(draw, dtype), dtype)
    out = x_operand if op_type == "MaxPool" else activation("y", draw(SCALES), 3, "uint8")
    out = type(out)("y", out.params)
    attrs: dict[str, Any] = {}
    if op_type != "GlobalAveragePool":
        attrs = {
            "kernel_shape": kernel,
            "strides": [draw(st.integers(1, 2)) for _ in kernel],
            "pads": [draw(st.integers(0, k - 1)) for k in kernel] * 2,
            "ceil_mode": int(draw(st.booleans())),
            "count_include_pad": int(draw(st.booleans())),
        }
    node = prepared(op_type, [x_operand], [out], shapes=[x.shape], **attrs)
    return prepare_pool(node), x


@PROPERTY
@given(case=pool_cases())
def test_pools(case: tuple[Step, np.ndarray]) -> None:
    step, x = case
    _same(step, x)


@PROPERTY
@given(
    op_type=st.sampled_from(["Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "LeakyRelu", "Gelu"]),
    dtype=st.sampled_from(["uint8", "int8"]),
    scale=SCALES,
    data=st.data(),
)
def test_lookup_tables(op_type: str, dtype: str, scale: float, data: Any) -> None:
    assume(scale < 100)
    x = _integers(data.draw, (2, 5, 3), dtype)
    operand = activation("x", scale, _zero_point(data.draw, dtype), dtype)
    out = activation("y", 0.01, _zero_point(data.draw, "uint8"), "uint8")
    step = prepare_activation(prepared(op_type, [operand], [out]))
    _same(step, x)
