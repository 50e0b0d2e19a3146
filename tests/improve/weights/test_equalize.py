"""Cross-layer equalization (docs/numerics.md §I.2): the float function is kept while
channel ranges are equalized, a Clip's bound stays shared and exact on the data, and
high-bias absorption moves only biases a Relu never clips."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from eightbit.graph import Graph, normalize
from eightbit.improve.weights.equalize import (
    MIN_SCALE,
    depthwise_scales,
    equalize,
    find_pairs,
    nagel_scales,
    respect_clip,
)
from eightbit.quant import QuantConfig
from tests.improve.helpers import conv_pair, gemm_pair, inputs, run

PER_TENSOR = QuantConfig(per_channel=False)


def _weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    graph = Graph(model)
    return {
        node.name: np.asarray(graph.initializers[node.inputs[1]], np.float64)
        for node in graph.nodes
        if node.op_type in ("Conv", "Gemm")
    }


def _second_input(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """The tensor the second layer reads, as ORT computes it (an oracle)."""
    tensor = Graph(model).node("second").inputs[0]
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    exposed.graph.output.append(onnx.helper.make_empty_tensor_value_info(tensor))
    return run(exposed, x, tensor)


def _channel_max(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """Largest |value| per channel of the tensor the second layer reads."""
    values = _second_input(model, x)
    return np.abs(values).max(axis=tuple(a for a in range(values.ndim) if a != 1))


@pytest.mark.parametrize("activation", ["Relu", "LeakyRelu", None])
def test_per_tensor_equalization_keeps_the_function_and_equalizes_ranges(
    activation: str | None,
) -> None:
    model = normalize(conv_pair(activation))
    x = inputs(model)
    equalized, report = equalize(model, None, PER_TENSOR)
    np.testing.assert_allclose(run(equalized, x), run(model, x), rtol=1e-4, atol=1e-4)
    # Nagel's fixed point: output channel i of the first layer and input channel i of the
    # second have the same largest |weight|.
    weights = _weights(equalized)
    first = np.abs(weights["first"]).reshape(weights["first"].shape[0], -1).max(axis=1)
    second = np.abs(weights["second"]).max(axis=(0, 2, 3))
    np.testing.assert_allclose(first, second, rtol=1e-3)
    # ... and that range is the geometric mean of the two original ones (one common factor).
    before = _weights(model)
    r1 = np.abs(before["first"]).reshape(6, -1).max(axis=1)
    r2 = np.abs(before["second"]).max(axis=(0, 2, 3))
    ratio = first / np.sqrt(r1 * r2)
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-3)
    assert report.name == "equalize" and "1 pair(s) equalized" in report.notes[0]


def test_per_tensor_equalization_of_a_grouped_second_layer() -> None:
    """Input channel g*k+i of a grouped Conv is input i of group g: its range is the largest
    |weight| in that group's slice, one per channel of the first layer."""
    model = normalize(conv_pair("Relu", groups=2))
    x = inputs(model)
    equalized, report = equalize(model, None, PER_TENSOR)
    np.testing.assert_allclose(run(equalized, x), run(model, x), rtol=1e-4, atol=1e-4)
    weights = _weights(equalized)
    first = np.abs(weights["first"]).reshape(6, -1).max(axis=1)
    second = np.abs(weights["second"]).reshape(2, 2, 3, -1).max(axis=(1, 3)).reshape(-1)
    np.testing.assert_allclose(first, second, rtol=1e-3)
    assert "1 pair(s) equalized" in report.notes[0]


def test_gemm_pair_is_equalized_too() -> None:
    model = normalize(gemm_pair())
    x = inputs(model)
    equalized, _ = equalize(model, None, PER_TENSOR)
    np.testing.assert_allclose(run(equalized, x), run(model, x), rtol=1e-4, atol=1e-4)
    weights = _weights(equalized)
    first = np.abs(weights["first"]).max(axis=1)  # transB=1: rows are output channels
    second = np.abs(weights["second"]).max(axis=1)  # transB=0: rows are input channels
    np.testing.assert_allclose(first, second, rtol=1e-3)


def test_per_channel_equalizes_the_activation_into_a_depthwise_layer() -> None:
    model = normalize(conv_pair("Relu", depthwise=True, spread=50.0))
    x = inputs(model, n=48)
    equalized, report = equalize(model, {"input": x}, QuantConfig(), samples=48)
    np.testing.assert_allclose(run(equalized, x), run(model, x), rtol=1e-4, atol=1e-4)
    ranges = _channel_max(equalized, x)
    assert np.ptp(ranges[ranges > 0]) / ranges.max() < 1e-4  # every channel at the widest
    assert np.ptp(_channel_max(model, x)) / _channel_max(model, x).max() > 0.5
    assert report.notes[0].startswith("1 pair(s) equalized (1 into depthwise")


def test_per_channel_leaves_channel_mixing_pairs_alone() -> None:
    model = normalize(conv_pair("Relu", depthwise=False))
    equalized, report = equalize(model, {"input": inputs(model)}, QuantConfig())
    assert all(
        np.array_equal(a, b)
        for a, b in zip(_weights(model).values(), _weights(equalized).values(), strict=True)
    )
    assert any("channel-mixing" in note for note in report.notes)


def test_clip_pairs_keep_one_bound_and_the_function_on_the_data() -> None:
    model = normalize(conv_pair("Clip", clip_max=2.0, spread=20.0))
    x = inputs(model, n=48)
    equalized, report = equalize(model, {"input": x}, PER_TENSOR, samples=48)
    np.testing.assert_allclose(run(equalized, x), run(model, x), rtol=1e-4, atol=1e-4)
    clips = [n for n in Graph(equalized).nodes if n.op_type == "Clip"]
    assert len(clips) == 1  # one scalar bound, not a per-channel one
    assert "through a Clip" in report.notes[0]


def test_clip_pairs_need_data() -> None:
    model = normalize(conv_pair("Clip"))
    _, report = equalize(model, None, PER_TENSOR)
    assert any("need calibration data" in note for note in report.notes)
    assert report.notes[0] == "nothing to equalize"


def test_equalized_tensors_are_renamed_for_tools_that_match_by_name() -> None:
    model = normalize(conv_pair("Relu"))
    equalized, _ = equalize(model, None, PER_TENSOR)
    graph = Graph(equalized)
    assert graph.node("second").inputs[0] == "mid_equalized"
    assert graph.node("first").outputs[0] == "pre_equalized"
    assert graph.outputs[0].name == "output"


def test_high_bias_absorption_moves_never_clipped_bias_into_the_next_layer() -> None:
    # 1x1 second layer without padding: the moved bias is exact at every position.
    model = normalize(conv_pair("Relu", second_kernel=1, first_bias_shift=40.0, spread=2.0))
    x = inputs(model, n=48)
    equalized, report = equalize(model, {"input": x}, PER_TENSOR, samples=48)
    np.testing.assert_allclose(run(equalized, x), run(model, x), rtol=1e-4, atol=1e-3)
    assert "absorbed" in report.notes[0]
    # The tensor between the layers now starts at 0 on some channel it never reached.
    assert _channel_min(equalized, x).min() < _channel_min(model, x).min() / 10


def test_a_clip_without_upper_bound_absorbs_as_relu_does() -> None:
    # Clip(x, 0, ∞) is Relu: f(x − c) = f(x) − c where x >= c > 0 (the op spec's clamp bounds
    # say so, not its op type).
    model = normalize(
        conv_pair("Clip", clip_max=np.inf, second_kernel=1, first_bias_shift=40.0, spread=2.0)
    )
    x = inputs(model, n=48)
    equalized, report = equalize(model, {"input": x}, PER_TENSOR, samples=48)
    np.testing.assert_allclose(run(equalized, x), run(model, x), rtol=1e-4, atol=1e-3)
    assert "absorbed" in report.notes[0]


def _channel_min(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return _second_input(model, x).min(axis=(0, 2, 3))


def test_no_absorption_through_padded_layers() -> None:
    model = normalize(conv_pair("Relu", second_kernel=3, first_bias_shift=40.0, spread=2.0))
    _, report = equalize(model, {"input": inputs(model)}, PER_TENSOR)
    assert "absorbed" not in report.notes[0]


def test_shared_weights_are_not_pairs() -> None:
    model = normalize(conv_pair("Relu"))
    model.graph.node.append(onnx.helper.make_node("Conv", ["input", "w1"], ["extra"], name="x"))
    model.graph.output.append(onnx.helper.make_empty_tensor_value_info("extra"))
    pairs, _ = find_pairs(Graph(model))
    assert pairs == []


positive = arrays(np.float64, st.integers(1, 12), elements=st.floats(1e-3, 1e3))


@settings(max_examples=50, deadline=None)
@given(positive, st.data())
def test_nagel_scales_make_both_ranges_equal(first: np.ndarray, data: st.DataObject) -> None:
    second = data.draw(arrays(np.float64, first.shape, elements=st.floats(1e-3, 1e3)))
    scales = nagel_scales(first, second)
    np.testing.assert_allclose(first / scales, second * scales, rtol=1e-9)


@settings(max_examples=50, deadline=None)
@given(positive, st.floats(0.5, 10.0))
def test_respected_clip_keeps_each_observed_channel_below_the_shared_bound(
    ranges: np.ndarray, bound: float
) -> None:
    ranges = np.minimum(ranges, bound)  # values a Clip(0, bound) can produce
    scales, shared = respect_clip(depthwise_scales(ranges[::-1].copy()), ranges, bound)
    # Each scaled channel stays within the shared bound, which is at most its exact bound.
    assert np.all(ranges / scales <= shared * (1 + 1e-12))
    assert np.all(shared <= bound / scales * (1 + 1e-12))


def test_depthwise_scales_floor_and_dead_channels() -> None:
    scales = depthwise_scales(np.array([0.0, 1e-9, 0.5, 2.0]))
    np.testing.assert_allclose(scales, [1.0, MIN_SCALE, 0.25, 1.0])
