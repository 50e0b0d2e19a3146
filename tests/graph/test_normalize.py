"""normalize: each step keeps the model's outputs (ONNX Runtime is the oracle)."""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from eightbit.errors import ModelError
from eightbit.graph import Graph, _skeleton, load_model, normalize
from tests.fixtures import models
from tests.graph.helpers import assert_same_outputs, serialized

BUILDERS = models.STRAIGHT_LINE_BUILDERS


def _op_types(model: onnx.ModelProto) -> list[str]:
    return [node.op_type for node in model.graph.node]


def _opset(model: onnx.ModelProto) -> int:
    return next(entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx"))


@pytest.mark.parametrize("build", BUILDERS, ids=lambda b: b.__name__)
def test_normalized_model_computes_the_same_outputs(build: Callable[[], onnx.ModelProto]) -> None:
    original = build()
    before = serialized(original)
    normalized = normalize(original)
    assert serialized(original) == before, "normalize changed its input"
    assert_same_outputs(original, normalized)
    onnx.checker.check_model(normalized, full_check=True)


@pytest.mark.parametrize("build", BUILDERS, ids=lambda b: b.__name__)
def test_normalized_form(build: Callable[[], onnx.ModelProto]) -> None:
    normalized = normalize(build())
    names = [node.name for node in normalized.graph.node]
    assert all(names) and len(set(names)) == len(names)
    assert not {"Constant", "Identity", "Dropout"} & set(_op_types(normalized))
    assert _opset(normalized) >= 13
    graph = Graph(normalized)
    for node in graph.nodes:
        for name in node.outputs:
            assert graph.info(name) is not None, f"no inferred type for {name}"


def test_batchnorm_folds_into_conv() -> None:
    original = models.conv_bn_relu()
    normalized = normalize(original)
    assert "BatchNormalization" not in _op_types(normalized)
    conv = next(node for node in normalized.graph.node if node.op_type == "Conv")
    assert conv.name == "conv" and conv.output[0] == "bn_out"
    weights = Graph(normalized).initializers
    assert not np.allclose(weights["conv.weight"], Graph(original).initializers["conv.weight"])
    assert not any(name.startswith("bn.") for name in weights)
    assert_same_outputs(original, normalized)


def test_batchnorm_after_relu_stays(caplog: pytest.LogCaptureFixture) -> None:
    original = models.unfoldable_bn()
    with caplog.at_level(logging.INFO, logger="eightbit.graph"):
        normalized = normalize(original)
    assert _op_types(normalized) == ["Conv", "Relu", "BatchNormalization"]
    assert "kept BatchNormalization 'bn'" in caplog.text and "Relu" in caplog.text


def test_normalize_logs_its_steps(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="eightbit.graph"):
        normalize(models.conv_bn_relu())
    assert "folded 1 BatchNormalization nodes: bn" in caplog.text


def test_dynamic_batch_stays_symbolic() -> None:
    graph = Graph(normalize(models.conv_bn_relu(dynamic_batch=True)))
    assert graph.inputs[0].shape == ("batch", 3, 8, 8)
    assert graph.info("relu_out").shape == ("batch", 4, 8, 8)  # type: ignore[union-attr]
    assert graph.outputs[0].shape == ("batch", 3)
    static = Graph(normalize(models.conv_bn_relu(dynamic_batch=False)))
    assert static.info("relu_out").shape == (1, 4, 8, 8)  # type: ignore[union-attr]


def test_weights_in_constant_nodes_become_initializers() -> None:
    original = models.weights_in_constants()
    graph = Graph(normalize(original))
    conv, gemm = graph.node("conv"), graph.node("fc")
    assert conv.inputs[1:] == ("W", "B")
    assert all(name in graph.initializers for name in conv.inputs[1:] + gemm.inputs[1:])
    assert graph.initializers[gemm.inputs[1]].shape == (4, 2)
    np.testing.assert_array_equal(graph.initializers["fc_b"], np.array([0.1, -0.2], np.float32))
    assert graph.initializers["shape"].dtype == np.int64


def test_constant_subgraphs_fold() -> None:
    original = models.constant_subgraph()
    graph = Graph(normalize(original))
    assert [node.op_type for node in graph.nodes] == ["MatMul", "Mul", "Add"]
    matmul = graph.node("matmul")
    assert graph.initializers[matmul.inputs[1]].shape == (4, 5)
    initializers = {t.name: numpy_helper.to_array(t) for t in original.graph.initializer}
    np.testing.assert_array_equal(
        graph.initializers["scale"], initializers["scale_a"] * initializers["scale_b"]
    )
    np.testing.assert_array_equal(graph.initializers["offset"], np.array([20], np.float32))


def test_large_constant_results_are_not_stored() -> None:
    # ConstantOfShape of a tiny shape would store a 256 KiB tensor: it is computed at run
    # time instead, while the small Shape → Cast expression next to it still folds.
    nodes = [
        helper.make_node(
            "ConstantOfShape",
            ["shape"],
            ["ones"],
            name="fill",
            value=numpy_helper.from_array(np.array([1.0], np.float32)),
        ),
        helper.make_node("Add", ["x", "ones"], ["y"], name="add"),
    ]
    model = helper.make_model(
        helper.make_graph(
            nodes,
            "fill",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [256, 256])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [256, 256])],
            [numpy_helper.from_array(np.array([256, 256], np.int64), "shape")],
        ),
        opset_imports=[helper.make_opsetid("", 13)],
    )
    normalized = normalize(model)
    assert _op_types(normalized) == ["ConstantOfShape", "Add"]
    assert_same_outputs(model, normalized)


def test_opset_11_is_upgraded_to_13() -> None:
    original = models.opset11_model()
    normalized = normalize(original)
    assert _opset(original) == 11 and _opset(normalized) == 13
    assert normalized.ir_version >= 7
    assert "Dropout" not in _op_types(normalized)
    assert_same_outputs(original, normalized)


def test_min_opset_leaves_newer_models_alone() -> None:
    assert _opset(normalize(models.opset11_model(), min_opset=11)) == 11
    assert _opset(normalize(models.conv_bn_relu(opset=17))) == 17


def test_unknown_op_stops_the_upgrade_with_its_name() -> None:
    graph = helper.make_graph(
        [
            helper.make_node("Relu", ["x"], ["r"], name="relu"),
            helper.make_node("FancyOp", ["r"], ["y"], name="fancy"),
        ],
        "custom",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    with pytest.raises(ModelError, match="'fancy' uses 'FancyOp'") as excinfo:
        normalize(model)
    assert "\n" not in str(excinfo.value) and "opset 11 to 13" in str(excinfo.value)


def test_converter_failure_names_the_op() -> None:
    # onnx's converter has no adapter for LSTM-1 → LSTM-7: an opset 6 model cannot rise.
    hidden = 3
    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(rng.standard_normal((1, 4 * hidden, 2)).astype(np.float32), "W"),
        numpy_helper.from_array(
            rng.standard_normal((1, 4 * hidden, hidden)).astype(np.float32), "R"
        ),
    ]
    graph = helper.make_graph(
        [helper.make_node("LSTM", ["x", "W", "R"], ["y"], name="lstm", hidden_size=hidden)],
        "rnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5, 1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [5, 1, 1, hidden])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 6)], ir_version=4)
    onnx.checker.check_model(model)
    with pytest.raises(ModelError, match=r"cannot upgrade .* \(it fails on LSTM\)") as excinfo:
        normalize(model)
    assert "\n" not in str(excinfo.value) and "re-export" in str(excinfo.value)


def test_ir3_weights_listed_as_inputs_become_constants() -> None:
    # IR < 4 models list every initializer as a graph input, too.
    model = models.opset11_model()
    model.opset_import[0].version = 8
    model.ir_version = 3
    for tensor in model.graph.initializer:
        model.graph.input.append(
            helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims))
        )
    onnx.checker.check_model(model)
    normalized = normalize(model)
    assert [value.name for value in normalized.graph.input] == ["input"]
    assert _opset(normalized) == 13 and normalized.ir_version >= 7
    assert_same_outputs(model, normalized)


def test_integer_input_passes_untouched() -> None:
    original = models.int32_input()
    normalized = normalize(original)
    ids = next(value for value in normalized.graph.input if value.name == "ids")
    assert ids == next(value for value in original.graph.input if value.name == "ids")
    graph = Graph(normalized)
    assert graph.node("embed").inputs == ("embedding", "ids")
    assert "ids" not in graph.float_activations()
    assert_same_outputs(original, normalized)


def _chain(nodes: list[onnx.NodeProto], outputs: list[str]) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", 4]) for name in outputs],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_identity_feeding_a_graph_output_is_removed_keeping_the_output_name() -> None:
    model = _chain(
        [
            helper.make_node("Relu", ["x"], ["r"], name="relu"),
            helper.make_node("Identity", ["r"], ["i"], name="id1"),
            helper.make_node("Identity", ["i"], ["y"], name="id2"),
            helper.make_node("Sigmoid", ["i"], ["z"], name="sigmoid"),
        ],
        ["y", "z"],
    )
    normalized = normalize(model)
    assert _op_types(normalized) == ["Relu", "Sigmoid"]
    assert list(normalized.graph.node[0].output) == ["y"]
    assert list(normalized.graph.node[1].input) == ["y"]
    assert_same_outputs(model, normalized)


def test_identity_from_input_to_output_stays() -> None:
    model = _chain([helper.make_node("Identity", ["x"], ["y"], name="copy")], ["y"])
    normalized = normalize(model)
    assert _op_types(normalized) == ["Identity"]
    assert_same_outputs(model, normalized)


def test_dropout_whose_mask_is_used_stays() -> None:
    model = _chain(
        [
            helper.make_node("Dropout", ["x"], ["d", "mask"], name="dropout"),
            helper.make_node("Cast", ["mask"], ["m"], name="cast", to=TensorProto.FLOAT),
            helper.make_node("Add", ["d", "m"], ["y"], name="add"),
        ],
        ["y"],
    )
    assert "Dropout" in _op_types(normalize(model))


def test_names_are_unique_stable_and_keep_given_names() -> None:
    model = _chain(
        [
            helper.make_node("Relu", ["x"], ["a"], name="layer"),
            helper.make_node("Relu", ["a"], ["b"], name="layer"),
            helper.make_node("Relu", ["b"], ["c"]),
            helper.make_node("Relu", ["c"], ["y"], name="Relu_2"),
        ],
        ["y"],
    )
    names = [node.name for node in normalize(model).graph.node]
    assert names == ["layer", "layer_1", "Relu_2_1", "Relu_2"]
    assert [node.name for node in normalize(model).graph.node] == names
    assert [node.name for node in normalize(models.two_inputs()).graph.node] == [
        "Add_0",
        "Concat_1",
        "MatMul_2",
    ]


def test_unsorted_graph_is_sorted() -> None:
    model = models.conv_bn_relu()
    nodes = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(reversed(nodes))
    normalized = normalize(model)
    assert _op_types(normalized) == ["Conv", "Relu", "GlobalAveragePool", "Flatten", "Gemm"]
    assert_same_outputs(models.conv_bn_relu(), normalized)


def test_unused_nodes_and_initializers_are_dropped() -> None:
    model = models.two_inputs()
    model.graph.node.append(helper.make_node("Neg", ["weight"], ["unused"], name="orphan"))
    model.graph.initializer.append(numpy_helper.from_array(np.array([1], np.float32), "spare"))
    normalized = normalize(model)
    assert "Neg" not in _op_types(normalized)
    assert [t.name for t in normalized.graph.initializer] == ["weight"]


def test_weights_held_out_of_onnx_tools_come_back(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every initializer detached from the checker, converter and shape inference (what
    # happens to the weights of models past 2 GiB) still ends up in the result unchanged.
    monkeypatch.setattr(_skeleton, "PAYLOAD_MIN_BYTES", 0)
    for build in (models.opset11_model, models.constant_subgraph, models.conv_bn_relu):
        original = load_model(build())
        normalized = normalize(original)
        assert not [v.name for v in normalized.graph.input if v.name not in ("input", "x")]
        assert_same_outputs(original, normalized)


def test_torch_export_with_batchnorm_folds_completely() -> None:
    torch = pytest.importorskip("torch")
    module = models.torch_small_cnn()
    example = torch.randn(2, 3, 8, 8)
    exported = models.torch_export(module, example)
    assert _op_types(exported).count("BatchNormalization") == 3
    normalized = normalize(load_model(exported))
    assert "BatchNormalization" not in _op_types(normalized)
    assert _op_types(normalized).count("Conv") == 3
    assert_same_outputs(exported, normalized)
    feeds = models.random_inputs(exported, n=3)
    with torch.no_grad():
        expected = module(torch.from_numpy(feeds["input"])).numpy()
    actual = models.run_onnxruntime(normalized, feeds)[0]
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


def test_control_flow_keeps_its_outer_reads() -> None:
    original = models.if_branches()
    normalized = normalize(original)
    assert _op_types(normalized) == ["Relu", "If"]
    for flag in (True, False):
        feeds = models.random_inputs(original)
        feeds["flag"] = np.array(flag)
        assert_same_outputs(original, normalized, feeds)


def test_batchnorm_chain_folds_completely() -> None:
    model = models.conv_bn_relu()
    graph = model.graph
    second = [numpy_helper.from_array(t, f"bn2.{n}") for n, t in _second_bn_params().items()]
    graph.initializer.extend(second)
    relu = next(node for node in graph.node if node.op_type == "Relu")
    relu.input[0] = "bn2_out"
    graph.node.insert(
        2,
        helper.make_node(
            "BatchNormalization", ["bn_out", *(t.name for t in second)], ["bn2_out"], name="bn2"
        ),
    )
    normalized = normalize(model)
    assert "BatchNormalization" not in _op_types(normalized)
    assert_same_outputs(model, normalized)


def _second_bn_params() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {
        "scale": rng.uniform(0.5, 1.5, 4).astype(np.float32),
        "bias": rng.uniform(-0.5, 0.5, 4).astype(np.float32),
        "mean": rng.uniform(-0.5, 0.5, 4).astype(np.float32),
        "var": rng.uniform(0.5, 1.5, 4).astype(np.float32),
    }


@pytest.mark.parametrize(("training", "removed"), [(False, True), (True, False)])
def test_dropout_training_flag_decides(training: bool, removed: bool) -> None:
    model = _chain(
        [
            helper.make_node("Relu", ["x"], ["r"], name="relu"),
            helper.make_node("Dropout", ["r", "ratio", "training"], ["y"], name="dropout"),
        ],
        ["y"],
    )
    model.graph.initializer.extend(
        [
            numpy_helper.from_array(np.array(0.5, np.float32), "ratio"),
            numpy_helper.from_array(np.array(training), "training"),
        ]
    )
    assert ("Dropout" not in _op_types(normalize(model))) == removed
