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
from eightbit.engine.kernels.gemm import (
    FLOAT32_EXACT,
    SHIFTED_BOUND,
    exact_ends,
    exact_matmul,
    exact_sum,
    prepare_matmul,
)
from eightbit.engine.kernels.pool import prepare_pool
from eightbit.engine.kernels.requantize import Requantization, Rescale
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


# With |x'| <= 128 and |w| = 128 everywhere, a chunk holds 2^24 / 128 / 128 = 1024 terms.
CHUNK_DEPTHS = [1, 1023, 1024, 1025, 2047, 2048, 2049, 4608]


@PROPERTY
@given(data=st.data(), rows=st.integers(1, 4), depth=st.integers(1, 3000))
def test_exact_ends_keep_every_chunk_exact_and_full(data: Any, rows: int, depth: int) -> None:
    weight = _integers(data.draw, (rows, depth), "int8").astype(np.int64)
    ends = exact_ends(weight)
    assert ends[-1] == depth and list(ends) == sorted(set(ends))
    limit = FLOAT32_EXACT // SHIFTED_BOUND
    start = 0
    for end in ends:
        reach = np.abs(weight[:, start:end]).sum(axis=1).max()
        assert reach <= limit
        if end < depth:  # the chunk stops where one more term would break the bound
            assert np.abs(weight[:, start : end + 1]).sum(axis=1).max() > limit
        start = end


@pytest.mark.parametrize("depth", CHUNK_DEPTHS)
def test_exact_sum_is_exact_at_chunk_boundaries(depth: int) -> None:
    weight = np.full((3, depth), -128, dtype=np.int64)
    weight[1, ::7] = 127
    weight[2, ::3] = -127
    x = np.full((depth, 4), -128, dtype=np.int64)  # uint8 0 shifted: the largest products
    x[::5, 1] = 127
    x[::2, 3] = -127
    ends = exact_ends(weight)
    assert len(ends) == -(-depth // 1024)
    total = exact_sum(weight.astype(np.float32), x.astype(np.float32), ends, "test")
    np.testing.assert_array_equal(total.astype(np.int64), weight @ x)
    if depth * 128 * 128 > 2 * FLOAT32_EXACT:  # one float32 sum would not be exact here
        single = weight.astype(np.float32) @ x.astype(np.float32)
        assert not np.array_equal(single.astype(np.int64), weight @ x)


@st.composite
def deep_conv_cases(draw: Any) -> tuple[Step, np.ndarray]:
    """Reductions of 1024 terms and more (several float32 chunks), extremes included."""
    channels = draw(st.sampled_from([64, 113, 128, 130]))
    kernel = draw(st.sampled_from([(1, 1), (3, 3), (1, 3)]))
    out_channels = draw(st.integers(1, 2))
    strides = [draw(st.integers(1, 2)) for _ in kernel]
    pads = [draw(st.integers(0, k - 1)) for k in kernel] * 2
    x_type = draw(st.sampled_from(["uint8", "int8"]))
    x = _integers(draw, (draw(st.integers(1, 2)), channels, *(k + 2 for k in kernel)), x_type)
    weight = _integers(draw, (out_channels, channels, *kernel), "int8")
    w_scales = [draw(SCALES) for _ in range(out_channels)]
    node = prepared(
        "Conv",
        [
            activation("x", 1.0, _zero_point(draw, x_type), x_type),
            constant("w", weight, w_scales, axis=0),
            constant("b", np.array([-(2**24), 2**24 - 3])[:out_channels], w_scales, "int32"),
        ],
        [activation("y", 1.0, _zero_point(draw, "uint8"), "uint8")],
        strides=strides,
        pads=pads,
    )
    return prepare_conv(node), x


@PROPERTY
@given(case=deep_conv_cases())
def test_conv_over_several_chunks(case: tuple[Step, np.ndarray]) -> None:
    step, x = case
    _same(step, x)


def test_conv_chunks_and_both_requantizations_are_exercised() -> None:
    """Full-scale weights over 128 x 3 x 3 terms need two float32 chunks; a moderate and a
    tiny scale both requantize by the float32 rule (§E.2), equal to the int64 definition."""
    x = np.tile(np.array([0, 255, 3], dtype=np.uint8), (1, 128, 16))[:, :, :25].reshape(
        1, 128, 5, 5
    )
    weight = np.full((2, 128, 3, 3), -128, dtype=np.int8)
    weight[1, ::2] = 127
    for scale, in_float in ((1e-4, True), (2.0**-30, True)):
        node = prepared(
            "Conv",
            [activation("x", 1.0, 7), constant("w", weight, [scale, scale])],
            [activation("y", 1.0, 100)],
            pads=[1, 1, 1, 1],
        )
        step = prepare_conv(node)
        assert len(step._fast.ends) == 2  # type: ignore[attr-defined]
        assert step._in_float is in_float  # type: ignore[attr-defined]
        _same(step, x)


@pytest.mark.parametrize("x_type", ["uint8", "int8"])
def test_depthwise_conv_beyond_float32_sums_in_float64(x_type: str) -> None:
    """1100 taps of |w| = 128: a running sum can pass 2^24, so the taps add in float64."""
    low, high = TYPES[x_type]
    x = np.resize(np.array([low, high, low + 1], dtype=np.dtype(x_type)), (1, 2, 1102))
    weight = np.full((2, 1, 1100), -128, dtype=np.int8)
    weight[1, 0, ::3] = 127
    node = prepared(
        "Conv",
        [activation("x", 1.0, low, x_type), constant("w", weight, [1e-4, 2e-4])],
        [activation("y", 1.0, 0, "int8")],
        group=2,
        pads=[2, 2],
    )
    step = prepare_conv(node)
    depthwise = step._fast.depthwise  # type: ignore[attr-defined]
    assert depthwise is not None and depthwise.dtype == np.float64
    _same(step, x)


@st.composite
def requantization_cases(draw: Any) -> tuple[Requantization, np.ndarray, int]:
    """A requantization, accumulators up to ``largest`` (ties and extremes), ``largest``."""
    t = draw(st.integers(-7, 60))  # S = M · 2^-t
    multiplier = draw(st.one_of(st.just(2**23), st.integers(2**23, 2**24 - 1)))
    largest = draw(st.sampled_from([2**31 - 1, 2**24, 40_000, 1000, 1]))
    dtype = draw(st.sampled_from(["uint8", "int8"]))
    low, high = TYPES[dtype]
    zero = _zero_point(draw, dtype)
    rescale = Rescale(np.asarray(multiplier), np.asarray(24 - t))
    rq = Requantization(rescale, zero, low, high, dtype)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    half = 2 ** max(t - 24, 0)  # with M = 2^23, odd multiples of this are ties
    ties = np.arange(-41, 42) * half
    near = np.array([largest, -largest, largest - 1, 1 - largest, 0, 1, -1])
    acc = np.concatenate([ties, near, rng.integers(-largest, largest + 1, 200)])
    return rq, np.clip(acc, -largest, largest), largest


@PROPERTY
@given(case=requantization_cases())
def test_apply_sum_equals_the_reference(case: tuple[Requantization, np.ndarray, int]) -> None:
    rq, acc, largest = case
    want = rq.apply_reference(acc)
    total = acc.astype(np.float64)
    np.testing.assert_array_equal(rq.apply_sum(total, None, bounded=True), want)
    bias = np.array([-3.0])
    np.testing.assert_array_equal(rq.apply_sum(total - bias, bias), want)
    if rq.exact_in_float64(largest):
        got = rq.apply_sum(total, None, bounded=True, in_float=True)
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


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
