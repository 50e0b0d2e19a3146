"""Zero Pads before a Conv: folded into the Conv's pads, the same float function; other
Pads are carried on the stored integers, and ONNX Runtime runs neither in float."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper

import eightbit
from eightbit.analysis.ort_kernels import float_nodes_in_ort
from eightbit.engine import run as run_engine
from eightbit.graph import normalize
from eightbit.graph.pad import fold_zero_pads
from eightbit.qdq import expand
from eightbit.quant import QuantConfig
from tests.analysis.ort_check import assert_int8_kernels_only
from tests.export.helpers import make_model, run
from tests.fixtures.models import torch_export
from tests.graph.helpers import assert_same_outputs

CHANNELS, SIZE = 8, 16


def pad_conv_model(
    pads: list[int] | None = None,
    *,
    mode: str = "constant",
    value: float | None = None,
    reader: str = "Conv",
    opset: int = 13,
    axes: list[int] | None = None,
    auto_pad: str | None = None,
) -> onnx.ModelProto:
    """x -> pointwise Conv -> Pad -> depthwise 3x3 stride-2 Conv (EfficientNet-Lite's
    TF "same" padding: one more row and column at the end)."""
    rng = np.random.default_rng(0)
    pads = [0, 0, 0, 0, 0, 0, 1, 1] if pads is None else pads
    arrays = {
        "w_pw": rng.standard_normal((CHANNELS, CHANNELS, 1, 1)).astype(np.float32),
        "w_dw": rng.standard_normal((CHANNELS, 1, 3, 3)).astype(np.float32),
        "pads": np.array(pads, np.int64),
    }
    pad_inputs = ["a", "pads"]
    if value is not None or axes is not None:
        arrays["value"] = np.array(0.0 if value is None else value, np.float32)
        pad_inputs.append("value")
    if axes is not None:
        arrays["axes"] = np.array(axes, np.int64)
        pad_inputs.append("axes")
    if reader == "Conv":
        extra = {"auto_pad": auto_pad} if auto_pad else {}
        read = helper.make_node(
            "Conv",
            ["p", "w_dw"],
            ["y"],
            name="depthwise",
            group=CHANNELS,
            kernel_shape=[3, 3],
            strides=[2, 2],
            **extra,
        )
    else:
        read = helper.make_node(
            reader, ["p"], ["y"], name="pool", kernel_shape=[3, 3], strides=[2, 2]
        )
    nodes = [
        helper.make_node("Conv", ["x", "w_pw"], ["a"], name="pointwise"),
        helper.make_node("Pad", pad_inputs, ["p"], name="pad", mode=mode),
        read,
    ]
    return make_model(
        nodes, [("x", [1, CHANNELS, SIZE, SIZE])], [("y", ["n", "c", "h", "w"])], arrays, opset
    )


def _quantize(model: onnx.ModelProto) -> eightbit.Quantized:
    data = np.random.default_rng(1).standard_normal((16, CHANNELS, SIZE, SIZE)).astype(np.float32)
    return eightbit.quantize(model, data, QuantConfig(), check_samples=0, improve="fast")


@pytest.mark.parametrize(
    ("pads", "opset", "axes"),
    [
        ([0, 0, 0, 0, 0, 0, 1, 1], 13, None),  # TF "same", stride 2: bottom and right
        ([0, 0, 2, 1, 0, 0, 1, 2], 13, None),  # asymmetric on both axes
        ([0, 1, 1, 1], 18, [2, 3]),  # opset 18: pads of the listed axes only
        ([1, 0, 1, 1], 18, [-2, -1]),
    ],
)
def test_a_zero_pad_becomes_the_convs_pads_with_the_same_function(pads, opset, axes):
    model = pad_conv_model(pads, opset=opset, axes=axes)
    normalized = normalize(model)
    assert [n.op_type for n in normalized.graph.node] == ["Conv", "Conv"]
    assert_same_outputs(model, normalized)


@pytest.mark.parametrize(
    "model",
    [
        pad_conv_model(value=0.5),  # not Conv's zero
        pad_conv_model(mode="reflect"),
        pad_conv_model([0, 1, 0, 0, 0, 0, 0, 0]),  # a channel pad
        pad_conv_model([0, 0, -1, 0, 0, 0, 0, 0]),  # a crop
        pad_conv_model(reader="MaxPool"),  # pads with -inf, not 0
        pad_conv_model(auto_pad="SAME_UPPER"),  # pads computed from the padded size
    ],
    ids=["value", "reflect", "channel", "negative", "maxpool", "same_upper"],
)
def test_other_pads_stay(model):
    work = onnx.ModelProto()
    work.CopyFrom(model)
    assert fold_zero_pads(work) == []
    assert [n.op_type for n in work.graph.node].count("Pad") == 1


def test_a_pad_that_is_a_graph_output_stays():
    model = pad_conv_model()
    model.graph.output.append(helper.make_tensor_value_info("p", onnx.TensorProto.FLOAT, None))
    assert fold_zero_pads(model) == []


def test_pad_then_conv_runs_as_one_qlinearconv_in_onnx_runtime():
    int8 = _quantize(pad_conv_model()).model
    assert_int8_kernels_only(int8)
    assert float_nodes_in_ort(int8, optimization="basic") != []  # the check sees float nodes


@pytest.mark.parametrize(
    "model",
    [pad_conv_model(mode="reflect"), pad_conv_model(value=0.5), pad_conv_model(reader="MaxPool")],
    ids=["reflect", "value", "maxpool"],
)
def test_other_pads_move_stored_integers_with_the_same_int8_function(model):
    result = _quantize(model)
    assert_int8_kernels_only(result.model)
    x = np.random.default_rng(2).standard_normal((1, CHANNELS, SIZE, SIZE)).astype(np.float32)
    standard = expand(result.model)
    assert _pad_reads(standard) == "DequantizeLinear" and _pad_reads(result.model) != _pad_reads(
        standard
    )
    onnx.checker.check_model(result.model, full_check=True)
    for optimized in (True, False):
        deployed = run(result.model, {"x": x}, optimized=optimized)
        np.testing.assert_array_equal(deployed, run(standard, {"x": x}, optimized=optimized))
    # The engine computes the QDQ function exactly; float Conv then Q rounds within 1 LSB.
    engine = next(iter(run_engine(result, x, strict_integer=True).values()))
    lsb = float(result.plan.tensors["y"].scale)
    np.testing.assert_allclose(engine, deployed, rtol=0, atol=1.01 * lsb)


def test_a_constant_pad_value_is_stored_as_its_quantized_value():
    result = _quantize(pad_conv_model(value=0.5, mode="constant"))
    graph = result.model.graph
    (pad,) = [n for n in graph.node if n.op_type == "Pad"]
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    params = result.plan.tensors["a"]
    expected = np.clip(
        np.rint(np.float32(0.5) / np.float32(params.scale)) + params.zero_point, 0, 255
    )
    assert constants[pad.input[2]].dtype == np.uint8
    assert int(constants[pad.input[2]]) == int(expected)


def _pad_reads(model: onnx.ModelProto) -> str:
    """The op type that produces the Pad's data input."""
    (pad,) = [n for n in model.graph.node if n.op_type == "Pad"]
    return next(n.op_type for n in model.graph.node if pad.input[0] in n.output)


class _LiteBlock(torch.nn.Module):
    """EfficientNet-Lite's stride-2 block as TensorFlow pads it: 1x1 expand, ReLU6, a zero
    pad at the bottom and right, 3x3 stride-2 depthwise, ReLU6, 1x1 project."""

    def __init__(self, channels: int = 8, expand: int = 4) -> None:
        super().__init__()
        wide = channels * expand
        self.expand = torch.nn.Conv2d(channels, wide, 1)
        self.depthwise = torch.nn.Conv2d(wide, wide, 3, 2, groups=wide)
        self.project = torch.nn.Conv2d(wide, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.nn.functional.relu6(self.expand(x))
        h = torch.nn.functional.pad(h, (0, 1, 0, 1))
        return self.project(torch.nn.functional.relu6(self.depthwise(h)))


def test_an_efficientnet_lite_block_from_torch_runs_on_int8_kernels_only():
    torch.manual_seed(0)
    model = torch_export(_LiteBlock().eval(), torch.randn(1, CHANNELS, SIZE, SIZE), opset=13)
    assert [n.op_type for n in model.graph.node].count("Pad") == 1
    normalized = normalize(model)
    assert "Pad" not in [n.op_type for n in normalized.graph.node]
    feeds = {
        model.graph.input[0].name: np.random.default_rng(0)
        .standard_normal((2, CHANNELS, SIZE, SIZE))
        .astype(np.float32)
    }
    assert_same_outputs(model, normalized, feeds)
    assert_int8_kernels_only(_quantize(model).model)


def test_a_pad_value_computed_at_run_time_keeps_the_pad_between_dq_and_q():
    model = pad_conv_model(mode="constant", value=0.5)
    graph = model.graph
    (pad,) = [n for n in graph.node if n.op_type == "Pad"]
    graph.node.insert(0, helper.make_node("ReduceMin", ["x"], ["low"], name="low", keepdims=0))
    pad.input[2] = "low"
    result = _quantize(model)
    assert _pad_reads(result.model) == "DequantizeLinear"
    x = np.random.default_rng(2).standard_normal((1, CHANNELS, SIZE, SIZE)).astype(np.float32)
    np.testing.assert_array_equal(
        run(result.model, {"x": x}, optimized=False),
        run(expand(result.model), {"x": x}, optimized=False),
    )
