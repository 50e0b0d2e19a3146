"""The Conv fast paths against each other and the definition (docs/numerics.md §E.3b).

With torch installed, 1-D and 2-D Convs sum on oneDNN (``kernels.torch_conv``); without it,
or when torch's float32 is not full precision, on numpy's BLAS. Both must equal the naive
kernel bit for bit, including where a single float32 sum would not be exact.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from eightbit.engine.kernels import torch_conv
from eightbit.engine.kernels.conv import ConvStep, prepare_conv
from eightbit.engine.kernels.gemm import FLOAT32_EXACT, SHIFTED_BOUND
from eightbit.engine.kernels.torch_conv import TorchConv, canary_operands
from tests.engine.helpers import PROPERTY, activation, constant, prepared

torch = pytest.importorskip("torch")

TYPES = {"uint8": (0, 255), "int8": (-128, 127)}


def _conv(x_zero: int, x_type: str, weight: np.ndarray, **attrs: Any) -> ConvStep:
    channels = weight.shape[0]
    node = prepared(
        "Conv",
        [
            activation("x", 1.0, x_zero, x_type),
            constant("w", weight, [1e-4] * channels),
            constant("b", np.arange(channels) * 1000 - 5, [1e-4] * channels, "int32"),
        ],
        [activation("y", 1.0, 100)],
        **attrs,
    )
    step = prepare_conv(node)
    assert isinstance(step, ConvStep)
    return step


def _numpy_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch_conv, "torch_or_none", lambda: None)


@st.composite
def conv_cases(draw: Any) -> tuple[ConvStep, np.ndarray]:
    """1-D and 2-D Convs oneDNN takes: groups, depthwise, strides, dilations, asymmetric
    padding, extreme and random 8-bit values."""
    rank = draw(st.integers(1, 2))
    group = draw(st.sampled_from([1, 2]))
    channels = group * draw(st.integers(1, 4))
    if draw(st.booleans()):
        group = channels  # depthwise
    out_channels = group * draw(st.integers(1, 3))
    kernel = tuple(draw(st.integers(2, 3)) for _ in range(rank))
    pads = [draw(st.integers(0, k - 1)) for k in kernel * 2]
    x_type = draw(st.sampled_from(["uint8", "int8"]))
    low, high = TYPES[x_type]
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    spatial = tuple(draw(st.integers(2 * k, 8)) for k in kernel)
    fill = draw(st.sampled_from(["random", "ends"]))
    shape = (draw(st.integers(1, 2)), channels, *spatial)
    if fill == "ends":
        x = rng.choice([low, high], size=shape)
        weight = rng.choice([-128, 127], size=(out_channels, channels // group, *kernel))
    else:
        x = rng.integers(low, high + 1, size=shape)
        weight = rng.integers(-128, 128, size=(out_channels, channels // group, *kernel))
    step = _conv(
        int(draw(st.integers(low, high))),
        x_type,
        weight.astype(np.int8),
        group=group,
        strides=[draw(st.integers(1, 2)) for _ in kernel],
        dilations=[draw(st.integers(1, 2)) for _ in kernel],
        pads=pads,
    )
    return step, x.astype(np.dtype(x_type))


@PROPERTY
@given(case=conv_cases())
def test_onednn_conv_equals_the_definition(case: tuple[ConvStep, np.ndarray]) -> None:
    step, x = case
    assert step._torch is not None  # the case runs on oneDNN
    np.testing.assert_array_equal(step.run(x)[0], step.run_reference(x)[0])


@PROPERTY
@given(case=conv_cases())
def test_numpy_conv_equals_the_definition_without_torch(case: tuple[ConvStep, np.ndarray]) -> None:
    step, x = case
    with pytest.MonkeyPatch.context() as patch:
        _numpy_only(patch)
        assert step._torch is None
        np.testing.assert_array_equal(step.run(x)[0], step.run_reference(x)[0])


def _deep_weight() -> np.ndarray:
    """3x3 over 130 channels: rows of |w| >= 127 need two float32 cuts (130·9·128·127 > 2^24);
    rows of small weights fit in one."""
    weight = np.full((4, 130, 3, 3), -127, dtype=np.int8)
    weight[1, ::2] = -128
    weight[2] = np.resize(np.array([3, -2, 0, 1], dtype=np.int8), weight[2].shape)
    weight[3] = 1
    return weight


def test_rows_beyond_one_float32_sum_are_cut_and_exact() -> None:
    weight = _deep_weight()
    x = np.resize(np.array([1, 0, 1, 1, 3, 1, 2], dtype=np.uint8), (2, 130, 6, 6))
    step = _conv(7, "uint8", weight, pads=[1, 0, 2, 1])
    conv = step._torch
    assert conv is not None
    cuts = {tuple(part.rows): len(part.channel_ends) for part in conv.parts}
    assert cuts == {(2, 3): 1, (0, 1): 2}
    np.testing.assert_array_equal(step.run(x)[0], step.run_reference(x)[0])
    shifted = x.astype(np.int64) - 128
    exact = torch.nn.functional.conv2d(torch.from_numpy(shifted), torch.from_numpy(weight).long())
    # The check can fail: odd sums above 2^24 are no float32, so one float32 sum over all
    # 130 channels cannot be exact here.
    assert np.any((np.abs(exact.numpy()) > FLOAT32_EXACT) & (exact.numpy() % 2 == 1))
    sums = conv(shifted.astype(np.float32))
    assert sums is not None
    np.testing.assert_array_equal(sums, exact.numpy())


def test_one_channel_beyond_float32_is_left_to_numpy() -> None:
    """1100 taps of |w| = 128 in one channel: no cut along the channels keeps the sum below
    2^24, so oneDNN is not used (numpy cuts along the taps)."""
    weight = np.full((1, 1, 1, 1100), -128, dtype=np.int8)
    assert TorchConv.prepare(weight.astype(np.int64), (1, 1), (1, 1), 1) is None
    step = _conv(0, "uint8", weight)
    x = np.zeros((1, 1, 1, 1100), dtype=np.uint8)
    np.testing.assert_array_equal(step.run(x)[0], step.run_reference(x)[0])


def test_grouped_conv_beyond_float32_is_left_to_numpy() -> None:
    """Two groups of 130 channels at |w| = 127: a cut would not be one input slice."""
    weight = np.full((2, 130, 3, 3), -127, dtype=np.int8)
    assert TorchConv.prepare(weight.astype(np.int64), (1, 1), (1, 1), 2) is None
    assert TorchConv.prepare(weight[:1].astype(np.int64), (1, 1), (1, 1), 1) is not None
    step = _conv(0, "uint8", weight, group=2)
    x = np.resize(np.array([1, 0, 3], dtype=np.uint8), (1, 260, 3, 3))
    np.testing.assert_array_equal(step.run(x)[0], step.run_reference(x)[0])


@pytest.mark.parametrize(
    ("shape", "strides"),
    [((2, 3, 1, 1), (1, 1)), ((2, 3, 1), (1,)), ((2, 3, 2, 2, 2), (1, 1, 1))],
)
def test_pointwise_and_3d_convs_stay_on_numpy(
    shape: tuple[int, ...], strides: tuple[int, ...]
) -> None:
    """A 1x1 stride-1 Conv has no im2col to save; oneDNN here takes 1-D and 2-D only."""
    weight = np.ones(shape, dtype=np.int64)
    assert TorchConv.prepare(weight, strides, strides, 1) is None


def test_reduced_precision_float32_falls_back_to_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    weight = np.full((2, 3, 3, 3), 127, dtype=np.int8)
    step = _conv(0, "uint8", weight, pads=[1, 1, 1, 1])
    assert step._torch is not None
    x = np.full((1, 3, 5, 5), 255, dtype=np.uint8)
    monkeypatch.setattr(torch, "get_float32_matmul_precision", lambda: "medium")
    assert torch_conv.torch_or_none() is None
    assert step._torch(np.zeros((1, 3, 7, 7), dtype=np.float32)) is None
    np.testing.assert_array_equal(step.run(x)[0], step.run_reference(x)[0])


def test_a_convolution_onednn_refuses_falls_back_to_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    weight = np.full((2, 3, 3, 3), 127, dtype=np.int8)
    step = _conv(0, "uint8", weight, pads=[1, 1, 1, 1])
    assert step._torch is not None
    x = np.full((1, 3, 5, 5), 255, dtype=np.uint8)

    def refuse(*args: Any) -> Any:
        raise RuntimeError("could not create a primitive descriptor")

    monkeypatch.setattr(torch_conv, "_convolve", refuse)
    assert step._torch(np.zeros((1, 3, 7, 7), dtype=np.float32)) is None
    np.testing.assert_array_equal(step.run(x)[0], step.run_reference(x)[0])


def test_the_canary_needs_every_float32_bit() -> None:
    """Its sums are odd and above 2^23, so an accumulator of fewer than 24 significant bits
    (bf16, tf32, float16) cannot hold them; and they are within the exactness bound."""
    x, weight = canary_operands()
    assert SHIFTED_BOUND * int(np.abs(weight).sum()) <= FLOAT32_EXACT
    assert int(np.abs(x).max()) <= SHIFTED_BOUND
    sums = np.einsum("nchw,oc->nohw", x, weight[:, :, 0, 0]).reshape(-1)
    assert all(2**23 < abs(int(s)) < 2**24 and s % 2 == 1 for s in sums)
    assert torch_conv.torch_or_none() is torch  # this torch computes them exactly


def test_the_canary_rejects_sums_rounded_below_24_bits(monkeypatch: pytest.MonkeyPatch) -> None:
    """A convolution that rounds its sums to bfloat16 (as a bf16 "fpmath" mode could) is
    caught, and the numpy path runs."""
    exact_convolve = torch_conv._convolve

    def rounding(*args: Any) -> Any:
        return exact_convolve(*args).to(torch.bfloat16).to(torch.float32)

    monkeypatch.setattr(torch_conv, "_convolve", rounding)
    torch_conv._passes_canary.cache_clear()
    try:
        assert torch_conv.torch_or_none() is None
    finally:
        torch_conv._passes_canary.cache_clear()


def test_weights_are_packed_per_input_shape() -> None:
    weight = np.resize(np.array([5, -127, 3], dtype=np.int8), (3, 2, 3, 3))
    step = _conv(3, "uint8", weight, strides=[2, 1], pads=[1, 1, 1, 1])
    rng = np.random.default_rng(1)
    for shape in [(1, 2, 5, 7), (2, 2, 6, 4), (1, 2, 5, 7)]:
        x = rng.integers(0, 256, size=shape).astype(np.uint8)
        np.testing.assert_array_equal(step.run(x)[0], step.run_reference(x)[0])
    assert step._torch is not None
    assert len(step._torch.parts[0].packed) == 2
