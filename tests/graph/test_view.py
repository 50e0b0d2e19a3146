"""Graph: the typed view other packages query."""

from __future__ import annotations

import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from eightbit.errors import ModelError
from eightbit.graph import Graph, Node, TensorInfo, normalize
from tests.fixtures import models


@pytest.fixture(scope="module")
def conv_graph() -> Graph:
    return Graph(normalize(models.conv_bn_relu()))


def test_inputs_outputs_and_opset(conv_graph: Graph) -> None:
    assert conv_graph.inputs == [TensorInfo("input", np.dtype(np.float32), ("batch", 3, 8, 8))]
    assert conv_graph.outputs == [TensorInfo("logits", np.dtype(np.float32), ("batch", 3))]
    assert conv_graph.opset == 13


def test_nodes_in_order_with_python_attributes(conv_graph: Graph) -> None:
    assert [n.op_type for n in conv_graph.nodes] == [
        "Conv",
        "Relu",
        "GlobalAveragePool",
        "Flatten",
        "Gemm",
    ]
    conv = conv_graph.node("conv")
    assert conv == Node(
        "conv", "Conv", ("input", "conv.weight", "conv.bias"), ("bn_out",), {}, domain=""
    )
    assert conv.attrs["pads"] == [1, 1, 1, 1]
    assert conv_graph.node("fc").attrs["transB"] == 1
    with pytest.raises(TypeError):
        conv.attrs["pads"] = [0]  # type: ignore[index]
    assert len({conv, conv_graph.node("conv")}) == 1  # hashable


def test_attributes_of_every_kind() -> None:
    tensor = numpy_helper.from_array(np.arange(3, dtype=np.int64))
    node = helper.make_node(
        "Custom",
        ["x"],
        ["y"],
        name="custom",
        domain="example.com",
        f=0.5,
        s="text",
        t=tensor,
        strings=["a", "b"],
        floats=[1.0, 2.5],
    )
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("example.com", 1)]
    )
    attrs = Graph(model).node("custom").attrs
    assert attrs["f"] == 0.5 and attrs["s"] == "text" and attrs["strings"] == ["a", "b"]
    assert attrs["floats"] == [1.0, 2.5]
    np.testing.assert_array_equal(attrs["t"], [0, 1, 2])
    assert Graph(model).node("custom").domain == "example.com"


def test_initializers_are_read_only_arrays(conv_graph: Graph) -> None:
    weights = conv_graph.initializers
    assert set(weights) == {"conv.weight", "conv.bias", "fc.weight", "fc.bias"}
    expected = {t.name: numpy_helper.to_array(t) for t in conv_graph.model.graph.initializer}
    for name, array in weights.items():
        np.testing.assert_array_equal(array, expected[name])
        assert not array.flags.writeable
    assert "absent" not in weights and len(weights) == 4


def test_producer_and_consumers(conv_graph: Graph) -> None:
    producer = conv_graph.producer("relu_out")
    assert producer is not None and producer.name == "relu"
    assert conv_graph.producer("input") is None and conv_graph.producer("conv.weight") is None
    assert [n.name for n in conv_graph.consumers("bn_out")] == ["relu"]
    assert [n.name for n in conv_graph.consumers("conv.weight")] == ["conv"]
    assert conv_graph.consumers("logits") == [] and conv_graph.consumers("absent") == []


def test_info_from_inputs_value_info_and_initializers(conv_graph: Graph) -> None:
    assert conv_graph.info("pool_out") == TensorInfo(
        "pool_out", np.dtype(np.float32), ("batch", 4, 1, 1)
    )
    assert conv_graph.info("conv.weight") == TensorInfo(
        "conv.weight", np.dtype(np.float32), (4, 3, 3, 3)
    )
    assert conv_graph.info("absent") is None


def test_node_lookup_suggests_close_names(conv_graph: Graph) -> None:
    with pytest.raises(ModelError, match=r"no node named 'con'.*'conv'"):
        conv_graph.node("con")
    with pytest.raises(ModelError, match=r"no node named 'zzz'$"):
        conv_graph.node("zzz")


def test_is_constant_follows_constant_only_computation() -> None:
    graph = Graph(models.constant_subgraph())  # not normalized: the subexpressions remain
    assert graph.is_constant("w_flat") and graph.is_constant("w_shape")
    assert graph.is_constant("w") and graph.is_constant("scale") and graph.is_constant("offset")
    assert not graph.is_constant("x") and not graph.is_constant("mm")
    assert not graph.is_constant("output")
    # Before normalize the intermediate tensors have no recorded type, so they are left out.
    assert graph.float_activations() == ["x", "output"]
    assert Graph(normalize(models.constant_subgraph())).float_activations() == [
        "x",
        "mm",
        "scaled",
        "output",
    ]


def test_float_activations_skip_integers_and_constants() -> None:
    graph = Graph(normalize(models.int32_input()))
    assert graph.float_activations() == ["x", "embedded", "summed", "output"]
    assert graph.inputs[0] == TensorInfo("ids", np.dtype(np.int32), ("batch", 6))


def test_float_activations_of_float16_and_double() -> None:
    nodes = [
        helper.make_node("Cast", ["x"], ["half"], name="to_half", to=TensorProto.FLOAT16),
        helper.make_node("Cast", ["half"], ["wide"], name="to_double", to=TensorProto.DOUBLE),
        helper.make_node("Cast", ["wide"], ["count"], name="to_int", to=TensorProto.INT64),
    ]
    graph = helper.make_graph(
        nodes,
        "casts",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("count", TensorProto.INT64, [2])],
    )
    model = normalize(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]))
    assert Graph(model).float_activations() == ["x", "half", "wide"]


def test_inputs_with_initializers_are_constants_not_inputs() -> None:
    model = models.two_inputs()
    weight = model.graph.initializer[0]
    model.graph.input.append(
        helper.make_tensor_value_info(weight.name, weight.data_type, list(weight.dims))
    )
    graph = Graph(model)
    assert [info.name for info in graph.inputs] == ["a", "b"]
    assert graph.is_constant("weight")


def test_nodes_come_in_topological_order() -> None:
    model = models.conv_bn_relu()
    nodes = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(reversed(nodes))
    assert [n.name for n in Graph(model).nodes] == ["conv", "bn", "relu", "pool", "flatten", "fc"]


def test_a_cycle_is_a_model_error() -> None:
    nodes = [
        helper.make_node("Relu", ["b"], ["a"], name="first"),
        helper.make_node("Relu", ["a"], ["b"], name="second"),
    ]
    graph = helper.make_graph(
        nodes, "loop", [], [helper.make_tensor_value_info("b", TensorProto.FLOAT, [1])]
    )
    with pytest.raises(ModelError, match="cycle"):
        Graph(helper.make_model(graph))


def _if_model() -> onnx.ModelProto:
    """``y = If(flag, then: outer * 2, else: outer)`` where ``outer = Relu(x)``."""
    two = numpy_helper.from_array(np.array([2], np.float32), "two")
    then_branch = helper.make_graph(
        [helper.make_node("Mul", ["outer", "two"], ["doubled"], name="double")],
        "then",
        [],
        [helper.make_tensor_value_info("doubled", TensorProto.FLOAT, [3])],
        [two],
    )
    else_branch = helper.make_graph(
        [helper.make_node("Identity", ["outer"], ["same"], name="same")],
        "else",
        [],
        [helper.make_tensor_value_info("same", TensorProto.FLOAT, [3])],
    )
    nodes = [
        helper.make_node("Relu", ["x"], ["outer"], name="relu"),
        helper.make_node(
            "If", ["flag"], ["y"], name="branch", then_branch=then_branch, else_branch=else_branch
        ),
    ]
    graph = helper.make_graph(
        nodes,
        "if",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [3]),
            helper.make_tensor_value_info("flag", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_subgraph_reads_count_as_consumers() -> None:
    graph = Graph(_if_model())
    assert [n.name for n in graph.consumers("outer")] == ["branch"]
    assert graph.node("branch").inputs == ("flag",)
    assert isinstance(graph.node("branch").attrs["then_branch"], onnx.GraphProto)


def test_view_of_a_large_model_builds_fast() -> None:
    width, depth = 16, 400
    nodes, inits = [], []
    source = "x"
    for i in range(depth):
        inits.append(numpy_helper.from_array(np.eye(width, dtype=np.float32), f"w{i}"))
        nodes.append(helper.make_node("MatMul", [source, f"w{i}"], [f"m{i}"], name=f"mm{i}"))
        nodes.append(helper.make_node("Relu", [f"m{i}"], [f"r{i}"], name=f"relu{i}"))
        source = f"r{i}"
    graph = helper.make_graph(
        nodes,
        "deep",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info(source, TensorProto.FLOAT, ["batch", width])],
        inits,
    )
    model = normalize(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]))
    start = time.perf_counter()
    view = Graph(model)
    activations = view.float_activations()
    elapsed = time.perf_counter() - start
    assert len(view.nodes) == 2 * depth and len(activations) == 2 * depth + 1
    assert elapsed < 1.0, f"building a {2 * depth}-node view took {elapsed:.2f} s"
