"""``to_torch``: each op family equals ONNX Runtime to float tolerance; weights train."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from eightbit.errors import ModelError
from eightbit.graph import make_session

torch = pytest.importorskip("torch")
from eightbit.pytorch.convert import to_torch  # noqa: E402 (needs torch)

DEMO_MODEL = Path(__file__).resolve().parents[2] / "examples" / "mnist" / "mnist_cnn.onnx"
RNG = np.random.default_rng(0)


def _random(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _model(
    nodes: list[onnx.NodeProto],
    inputs: dict[str, tuple[int, ...]],
    weights: dict[str, np.ndarray] | None = None,
    *,
    outputs: tuple[str, ...] = ("y",),
    opset: int = 17,
) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "case",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s)) for n, s in inputs.items()],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs],
        [numpy_helper.from_array(value, name) for name, value in (weights or {}).items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    # The checker wants the outputs' shapes: let shape inference write them.
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    known = {v.name: v for v in (*inferred.graph.value_info, *inferred.graph.output)}
    for output in model.graph.output:
        if known[output.name].type.tensor_type.HasField("shape"):
            output.CopyFrom(known[output.name])
    return model


def _assert_matches_ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> None:
    expected = make_session(model).run(None, feeds)
    module = to_torch(model)
    with torch.no_grad():
        got = module(**{name: torch.from_numpy(value) for name, value in feeds.items()})
    got = got if isinstance(got, tuple) else (got,)
    assert len(got) == len(expected)
    for ours, theirs in zip(got, expected, strict=True):
        assert ours.shape == theirs.shape
        np.testing.assert_allclose(ours.numpy(), theirs, rtol=1e-4, atol=1e-5)


def _node(op: str, inputs: list[str], **attributes: Any) -> onnx.NodeProto:
    return helper.make_node(op, inputs, ["y"], name=op.lower(), **attributes)


X = (2, 4, 9, 8)
CONV_W = {"w": _random(6, 4, 3, 3), "b": _random(6)}
CASES: dict[str, tuple[list[onnx.NodeProto], dict[str, tuple[int, ...]], dict[str, Any]]] = {
    "conv": (
        [_node("Conv", ["x", "w", "b"], pads=[1, 0, 2, 1], strides=[2, 1], dilations=[1, 2])],
        {"x": X}, CONV_W,
    ),
    "conv_same_upper_depthwise": (
        [_node("Conv", ["x", "w"], auto_pad="SAME_UPPER", strides=[2, 2], group=4)],
        {"x": X}, {"w": _random(4, 1, 3, 3)},
    ),
    "conv1d": ([_node("Conv", ["x", "w"], pads=[1, 1])], {"x": (2, 4, 7)}, {"w": _random(3, 4, 3)}),
    "conv_transpose": (
        [_node("ConvTranspose", ["x", "w", "b"], strides=[2, 2], pads=[1, 0, 0, 1],
               output_padding=[1, 1])],
        {"x": X}, {"w": _random(4, 3, 3, 3), "b": _random(3)},
    ),
    "gemm": (
        [_node("Gemm", ["x", "w", "b"], transB=1, alpha=0.5, beta=2.0)],
        {"x": (3, 5)}, {"w": _random(4, 5), "b": _random(4)},
    ),
    "matmul_batched": ([_node("MatMul", ["x", "w"])], {"x": (2, 3, 5)}, {"w": _random(5, 4)}),
    "batchnorm": (
        [_node("BatchNormalization", ["x", "s", "b", "m", "v"], epsilon=1e-3)],
        {"x": X},
        {"s": _random(4), "b": _random(4), "m": _random(4), "v": np.abs(_random(4)) + 0.5},
    ),
    "relu": ([_node("Relu", ["x"])], {"x": X}, {}),
    "clip": (
        [_node("Clip", ["x", "lo", "hi"])], {"x": X},
        {"lo": np.array(-0.5, np.float32), "hi": np.array(0.7, np.float32)},
    ),
    "sigmoid": ([_node("Sigmoid", ["x"])], {"x": X}, {}),
    "leaky_relu": ([_node("LeakyRelu", ["x"], alpha=0.2)], {"x": X}, {}),
    "hard_sigmoid": ([_node("HardSigmoid", ["x"], alpha=0.3, beta=0.4)], {"x": X}, {}),
    "hard_swish": ([_node("HardSwish", ["x"])], {"x": X}, {}),
    "tanh": ([_node("Tanh", ["x"])], {"x": X}, {}),
    "add_broadcast": ([_node("Add", ["x", "c"])], {"x": X}, {"c": _random(4, 1, 1)}),
    "mul_two_inputs": ([_node("Mul", ["x", "z"])], {"x": X, "z": X}, {}),
    "sub": ([_node("Sub", ["x", "c"])], {"x": X}, {"c": _random(8)}),
    "div": ([_node("Div", ["x", "c"])], {"x": X}, {"c": np.abs(_random(8)) + 1}),
    "max_pool_ceil": (
        [_node("MaxPool", ["x"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 0, 1],
               ceil_mode=1)],
        {"x": X}, {},
    ),
    "average_pool_pads": (
        [_node("AveragePool", ["x"], kernel_shape=[3, 2], strides=[2, 1], pads=[1, 0, 1, 1])],
        {"x": X}, {},
    ),
    "average_pool_include_pad": (
        [_node("AveragePool", ["x"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
               count_include_pad=1)],
        {"x": X}, {},
    ),
    "average_pool_1d_ceil": (
        [_node("AveragePool", ["x"], kernel_shape=[3], strides=[2], pads=[1, 0], ceil_mode=1)],
        {"x": (2, 4, 8)}, {},
    ),
    "global_average_pool": ([_node("GlobalAveragePool", ["x"])], {"x": X}, {}),
    "concat": ([_node("Concat", ["x", "z"], axis=1)], {"x": X, "z": (2, 3, 9, 8)}, {}),
    "reshape": (
        [_node("Reshape", ["x", "s"])], {"x": X}, {"s": np.array([0, -1, 8], np.int64)},
    ),
    "flatten": ([_node("Flatten", ["x"], axis=2)], {"x": X}, {}),
    "transpose": ([_node("Transpose", ["x"], perm=[0, 2, 3, 1])], {"x": X}, {}),
    "slice_negative_step": (
        [_node("Slice", ["x", "st", "en", "ax", "sp"])], {"x": X},
        {"st": np.array([-1, 1], np.int64), "en": np.array([-100, 7], np.int64),
         "ax": np.array([2, 3], np.int64), "sp": np.array([-2, 3], np.int64)},
    ),
    "squeeze_unsqueeze": (
        [helper.make_node("Unsqueeze", ["x", "a"], ["u"], name="u"),
         helper.make_node("Squeeze", ["u", "a"], ["y"], name="s")],
        {"x": X}, {"a": np.array([0, -1], np.int64)},
    ),
    "pad_reflect": (
        [_node("Pad", ["x", "p"], mode="reflect")], {"x": X},
        {"p": np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64)},
    ),
    "pad_edge_axes": (
        [_node("Pad", ["x", "p", "", "ax"], mode="edge")], {"x": X},
        {"p": np.array([2, 0, 1, 3], np.int64), "ax": np.array([3, 2], np.int64)},
    ),
    "pad_constant": (
        [_node("Pad", ["x", "p", "v"])], {"x": X},
        {"p": np.array([0, 1, 1, 0, 0, 0, 2, 1], np.int64), "v": np.array(0.5, np.float32)},
    ),
    "resize_nearest_asymmetric": (
        [_node("Resize", ["x", "", "sc"], mode="nearest",
               coordinate_transformation_mode="asymmetric", nearest_mode="floor")],
        {"x": X}, {"sc": np.array([1, 1, 2, 2], np.float32)},
    ),
    "resize_nearest_half_pixel_sizes": (
        [_node("Resize", ["x", "", "", "sz"], mode="nearest")], {"x": X},
        {"sz": np.array([2, 4, 14, 5], np.int64)},
    ),
    "resize_linear_half_pixel_sizes": (
        [_node("Resize", ["x", "", "", "sz"], mode="linear")], {"x": X},
        {"sz": np.array([2, 4, 13, 20], np.int64)},
    ),
    "resize_linear_align_corners": (
        [_node("Resize", ["x", "", "sc"], mode="linear",
               coordinate_transformation_mode="align_corners")],
        {"x": X}, {"sc": np.array([1, 1, 1.5, 2], np.float32)},
    ),
    "depth_to_space_crd": (
        [_node("DepthToSpace", ["x"], blocksize=2, mode="CRD")], {"x": (2, 8, 3, 4)}, {},
    ),
    "depth_to_space_dcr": ([_node("DepthToSpace", ["x"], blocksize=2)], {"x": (2, 8, 3, 4)}, {}),
    "space_to_depth": ([_node("SpaceToDepth", ["x"], blocksize=2)], {"x": (2, 3, 8, 6)}, {}),
    "softmax": ([_node("Softmax", ["x"], axis=1)], {"x": X}, {}),
    "layer_norm": (
        [_node("LayerNormalization", ["x", "s", "b"], axis=-1, epsilon=1e-3)],
        {"x": (2, 5, 8)}, {"s": _random(8), "b": _random(8)},
    ),
    "reduce_mean": (
        [_node("ReduceMean", ["x", "a"], keepdims=0)], {"x": X}, {"a": np.array([1, 3], np.int64)},
    ),
    "range_from_shape": (  # a detection head's anchor grid: 0.5, 1.5, ... along the width
        [helper.make_node("Shape", ["x"], ["s"], name="shape"),
         helper.make_node("Gather", ["s", "i"], ["w"], name="width"),
         helper.make_node("Cast", ["w"], ["wf"], name="cast", to=TensorProto.FLOAT),
         helper.make_node("Range", ["half", "wf", "one"], ["r"], name="range"),
         _node("Add", ["x", "r"])],
        {"x": X},
        {"i": np.array(3, np.int64), "half": np.array(0.5, np.float32),
         "one": np.array(1.0, np.float32)},
    ),
}  # fmt: skip
OPSETS = {"reduce_mean": 18, "pad_reflect": 18, "pad_edge_axes": 18, "pad_constant": 18}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_op_family_matches_onnxruntime(case: str) -> None:
    nodes, inputs, weights = CASES[case]
    model = _model(nodes, inputs, weights, opset=OPSETS.get(case, 17))
    _assert_matches_ort(model, {name: _random(*shape) for name, shape in inputs.items()})


def test_split_gives_each_output() -> None:
    node = helper.make_node("Split", ["x", "s"], ["a", "b"], name="split", axis=1)
    model = _model([node], {"x": X}, {"s": np.array([1, 3], np.int64)}, outputs=("a", "b"))
    _assert_matches_ort(model, {"x": _random(*X)})


def test_gelu_and_a_transformer_block() -> None:
    """MatMul, Softmax, LayerNormalization, Gelu, Transpose, Reshape: an attention sketch."""
    d = 8
    nodes = [
        helper.make_node("MatMul", ["x", "wq"], ["q"]),
        helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "xt"], ["scores"]),
        helper.make_node("Softmax", ["scores"], ["p"], axis=-1),
        helper.make_node("MatMul", ["p", "x"], ["mixed"]),
        helper.make_node("Add", ["mixed", "x"], ["res"]),
        helper.make_node("LayerNormalization", ["res", "g", "bb"], ["n"]),
        helper.make_node("Gelu", ["n"], ["act"], approximate="tanh"),
        helper.make_node("Reshape", ["act", "shape"], ["y"]),
    ]
    weights = {
        "wq": _random(d, d), "g": _random(d), "bb": _random(d),
        "shape": np.array([0, -1], np.int64),
    }  # fmt: skip
    model = _model(nodes, {"x": (2, 5, d)}, weights, opset=20)
    _assert_matches_ort(model, {"x": _random(2, 5, d)})


def test_demo_model_matches_onnxruntime_and_every_weight_is_a_parameter() -> None:
    model = onnx.load(str(DEMO_MODEL))
    _assert_matches_ort(model, {"image": _random(3, 1, 28, 28)})
    module = to_torch(model)
    names = {t.name for t in model.graph.initializer if t.data_type == TensorProto.FLOAT}
    statistics = {n.input[i] for n in model.graph.node if n.op_type == "BatchNormalization"
                  for i in (3, 4)}  # fmt: skip
    parameters = {id(p) for p in module.parameters()}
    for name in names - statistics:
        assert id(module.parameter_of(name)) in parameters, name
    for name in statistics:
        assert id(module.parameter_of(name)) not in parameters, name


def test_resnet18_style_matches_onnxruntime(tmp_path: Path) -> None:
    from benchmarks import models

    path = models.export_onnx(models.load_resnet18_torch(), tmp_path / "resnet18.onnx")
    model = onnx.load(str(path))
    assert {"Conv", "BatchNormalization", "MaxPool", "Add", "GlobalAveragePool", "Gemm"} <= {
        node.op_type for node in model.graph.node
    }
    _assert_matches_ort(model, {models.INPUT_NAME: _random(1, 3, 224, 224)})


def test_dynamo_export_with_dynamic_shapes_matches_onnxruntime() -> None:
    """The dynamo exporter's graphs: shapes computed by the graph, opset 18+ inputs."""
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(144, 3)
    ).eval()
    exported = torch.onnx.export(
        net, (torch.zeros(2, 3, 8, 8),), dynamo=True, verbose=False,
        dynamic_shapes=({0: torch.export.Dim.DYNAMIC},),
    ).model_proto  # fmt: skip
    _assert_matches_ort(exported, {exported.graph.input[0].name: _random(5, 3, 8, 8)})


def test_gradients_reach_every_parameter_and_train_back_into_onnx() -> None:
    model = onnx.load(str(DEMO_MODEL))
    module = to_torch(model)
    x = torch.from_numpy(_random(4, 1, 28, 28))
    module(x).square().mean().backward()
    for name, parameter in module.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.mul_(0.5)
    trained = module.weights_into(model)
    with torch.no_grad():
        expected = module(x).numpy()
    np.testing.assert_allclose(
        make_session(trained).run(None, {"image": x.numpy()})[0], expected, rtol=1e-4, atol=1e-5
    )


def test_unsupported_ops_are_named_with_what_is_supported() -> None:
    model = _model([_node("Einsum", ["x", "x"], equation="ij,ij->ij")], {"x": (2, 3)})
    with pytest.raises(ModelError, match=r"does not run: \['Einsum'\]; it runs \[.*'Conv'"):
        to_torch(model)
