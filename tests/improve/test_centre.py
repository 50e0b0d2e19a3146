"""Centring non-negative tensors for the symmetric grid (docs/numerics.md §Q16.1)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from eightbit.calibrate import CalibrationConfig, calibrate
from eightbit.calibrate.histogram import Histogram
from eightbit.graph import Graph, make_session, normalize
from eightbit.improve import ImproveConfig
from eightbit.improve.centre import centre_activations, find_groups
from eightbit.ops import Shift, lookup
from eightbit.pipeline import quantize
from eightbit.pipeline.stages import Centre
from eightbit.pipeline.state import Settings
from eightbit.quant import QuantConfig
from tests.fixtures.targets import residual_net


def chain_net(seed: int = 0) -> onnx.ModelProto:
    """Conv-Relu-MaxPool feeding a padded Conv and a residual Add (Relu after it), a ReLU6
    (Clip with input bounds) read by a 1x1 Conv, then pooling and a Gemm head."""
    rng = np.random.default_rng(seed)

    def weight(name: str, *shape: int, scale: float = 0.4) -> TensorProto:
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * scale, name)

    initializers = [
        weight("w0", 4, 3, 3, 3),
        weight("b0", 4, scale=0.2),
        weight("w1", 4, 4, 3, 3),
        weight("b1", 4, scale=0.2),
        weight("w2", 4, 4, 1, 1),
        weight("b2", 4, scale=0.2),
        weight("g", 5, 4),
        weight("gb", 5, scale=0.1),
        numpy_helper.from_array(np.array(0.0, np.float32), "low"),
        numpy_helper.from_array(np.array(6.0, np.float32), "high"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], "conv0", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c0"], ["r0"], "relu0"),
        helper.make_node("MaxPool", ["r0"], ["m0"], "pool0", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["m0", "w1", "b1"], ["c1"], "conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Clip", ["c1", "low", "high"], ["r1"], "relu6"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], "conv2"),
        helper.make_node("Add", ["c2", "m0"], ["s"], "residual"),
        helper.make_node("Relu", ["s"], ["r2"], "relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["p"], "gap"),
        helper.make_node("Flatten", ["p"], ["f"], "flatten"),
        helper.make_node("Gemm", ["f", "g", "gb"], ["logits"], "gemm", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 5])],
        initializers,
    )
    return normalize(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


@pytest.fixture(scope="module")
def samples() -> np.ndarray:
    return np.random.default_rng(3).standard_normal((64, 3, 8, 8)).astype(np.float32) * 2


@pytest.fixture(scope="module")
def centred(samples):
    model = chain_net()
    ranges = calibrate(model, {"x": samples}, CalibrationConfig())
    return model, ranges, *centre_activations(model, ranges)


def _run(model: onnx.ModelProto, tensors: list[str], samples: np.ndarray) -> list[np.ndarray]:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    known = {out for node in copy.graph.node for out in node.output}
    for name in tensors:
        if name in known and name not in {o.name for o in copy.graph.output}:
            copy.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    outputs = make_session(copy).run(None, {"x": samples})
    return outputs[: len(copy.graph.output)]


def test_the_groups_follow_the_shift_to_the_layers_that_take_it_back(centred):
    model, ranges, *_ = centred
    groups = find_groups(Graph(model), ranges)
    assert [group.source.name for group in groups] == ["conv0", "conv1"]
    first, second = groups
    assert first.members == ("r0", "m0", "s", "r2", "p", "f")
    assert [clamp.name for clamp, _ in first.clamps] == ["relu0", "relu2"]
    assert sorted(reader.name for reader, _ in first.readers) == ["conv1", "gemm"]
    assert second.members == ("r1",)
    assert [reader.name for reader, _ in second.readers] == ["conv2"]
    # c = hi/2 of the one tensor, on a whole number of its histogram's bins (Q.15.2)
    width = 2.0 ** ranges.histogram("r1").exponent
    assert abs(second.shift - ranges["r1"].max / 2) <= width / 2
    assert second.shift / width == round(second.shift / width)


def test_centring_keeps_the_function(centred, samples):
    model, _, result, _, report = centred
    reference = make_session(model).run(None, {"x": samples})[0]
    got = make_session(result).run(None, {"x": samples})[0]
    np.testing.assert_allclose(got, reference, atol=1e-4 * np.abs(reference).max())
    assert "in 2 group(s)" in report.notes[0]
    assert [n.op_type for n in result.graph.node].count("Pad") == 1  # conv1 is padded
    onnx.checker.check_model(result, full_check=True)


def test_each_member_is_c_lower_and_its_range_moves_with_it(centred, samples):
    model, ranges, result, shifted, _ = centred
    groups = {m: g.shift for g in find_groups(Graph(model), ranges) for m in g.members}
    names = ["r0", "m0", "r1", "r2", "f"]
    before = dict(zip(names, _run(model, names, samples)[1:], strict=True))
    after = dict(zip(names, _run(result, names, samples)[1:], strict=True))
    for name in names:
        shift = groups[name]
        np.testing.assert_allclose(after[name], before[name] - shift, atol=1e-4)
        assert shifted[name].min == pytest.approx(ranges[name].min - shift)
        assert shifted[name].max == pytest.approx(ranges[name].max - shift)
        old, new = ranges.histogram(name), shifted.histogram(name)
        assert new is not None and np.array_equal(new.counts, old.counts)
        rebuilt = Histogram.from_state(
            bins=new.bins, exponent=new.exponent, offset=new.offset, counts=new.counts,
            minimum=new.min, maximum=new.max,
        )  # fmt: skip
        assert rebuilt == new  # consistent: the bins moved by a whole number


def test_a_tensor_with_a_reader_that_cannot_take_the_shift_back_is_left_alone(samples):
    model = chain_net()
    # a Sigmoid also reads the ReLU6: sigmoid(y' + c) is not sigmoid(y') + anything
    model.graph.node.append(helper.make_node("Sigmoid", ["r1"], ["side"], "side"))
    side = helper.make_tensor_value_info("side", TensorProto.FLOAT, ["N", 4, 4, 4])
    model.graph.output.append(side)
    ranges = calibrate(model, {"x": samples}, CalibrationConfig())
    groups = find_groups(Graph(model), ranges)
    assert [group.source.name for group in groups] == ["conv0"]


def _rounding_noise(quantized: onnx.ModelProto, tensor: str, x: np.ndarray) -> float:
    """Mean squared difference between ``tensor`` before its Q and after its DQ."""
    exact, rounded = _run(quantized, [f"{tensor}_prequant", tensor], x)[1:]
    return float(np.mean((exact - rounded) ** 2))


def test_centring_wins_back_the_bit_on_the_tensorrt_grid(samples):
    """The ReLU6 output's rounding noise drops by ~6 dB: a step of hi/254, not hi/127."""
    model = chain_net()
    config = QuantConfig.for_target("tensorrt")
    noise = {}
    for centre in (False, True):
        improve = ImproveConfig(
            equalize=False, choose_clipping=False, bias_correction=False, safety_net=False,
            centre=centre,
        )  # fmt: skip
        result = quantize(model, {"x": samples}, config, improve=improve, check_samples=0)
        noise[centre] = _rounding_noise(result.model, "r1", samples)
    assert 10 * np.log10(noise[False] / noise[True]) > 5.0, noise


def test_only_a_symmetric_affine_target_centres():
    improve = ImproveConfig()
    applies = {
        target: Centre().applies(
            Settings(QuantConfig.for_target(target), improve, CalibrationConfig())
        )
        for target in ("ort", "tensorrt", "openvino", "mcu", "fpga")
    }
    assert applies == {
        "ort": False,
        "tensorrt": True,
        "openvino": False,
        "mcu": False,
        "fpga": False,
    }
    fast = Settings(
        QuantConfig.for_target("tensorrt"), ImproveConfig(centre=False), CalibrationConfig()
    )
    assert not Centre().applies(fast)


def test_the_tensorrt_form_of_a_centred_model_keeps_tensorrts_rules():
    samples = np.random.default_rng(1).standard_normal((96, 3, 12, 12)).astype(np.float32)
    result = quantize(residual_net(), {"x": samples}, QuantConfig.for_target("tensorrt"))
    model = result.model
    assert any(step.name == "centre" for step in result.plan.steps)
    initializers = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    producers = {out: node for node in model.graph.node for out in node.output}
    pads = [node for node in model.graph.node if node.op_type == "Pad"]
    assert pads, "the padded Conv after the centred Relu reads an explicit Pad"
    for pad in pads:  # int8 in, int8 out: Q -> Pad -> DQ, its fill value an int8 code
        assert producers[pad.input[0]].op_type == "QuantizeLinear"
        assert initializers[pad.input[2]].dtype == np.int8
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear" and node.input[0] not in initializers:
            assert initializers[node.input[2]].dtype == np.int8
            assert int(initializers[node.input[2]]) == 0
        if node.op_type in ("Conv", "Gemm", "MatMul"):
            assert producers[node.input[0]].op_type == "DequantizeLinear", node.name
            assert producers[node.input[1]].op_type == "DequantizeLinear", node.name


def test_the_fast_preset_leaves_the_graph_as_it_is(samples):
    config = QuantConfig.for_target("tensorrt")
    result = quantize(chain_net(), {"x": samples}, config, improve="fast", check_samples=0)
    assert not any(step.name == "centre" for step in result.plan.steps)
    ops = [node.op_type for node in result.model.graph.node]
    assert "Pad" not in ops and ops.count("Relu") == 2


def test_the_ops_say_how_a_shift_passes():
    """A move or a maximum passes it on; Pad writes its own fill value and an average over
    a padded window counts the padding, so neither does; Add sums its inputs' shifts."""
    facts = {op: getattr(lookup(op), "shift", None) for op in ("MaxPool", "Reshape", "Pad")}
    assert facts == {"MaxPool": Shift.COMMUTES, "Reshape": Shift.COMMUTES, "Pad": None}
    assert lookup("AveragePool").shift is None
    assert lookup("Add").shift is Shift.SUMS
