"""Functions written as elementary ops: recognized as one unit whatever the exporter's order,
fused into ONNX's own op where the opset has it (the same float function), otherwise kept
in float with int8 only at the boundary (docs/numerics.md §Q12)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

import eightbit
from eightbit.analysis.ort_kernels import float_nodes_in_ort
from eightbit.graph import Graph, normalize
from eightbit.graph.patterns import FUSED_OPS, ISLAND_KINDS, find_patterns, float_islands
from eightbit.quant import QuantConfig
from tests.export.helpers import make_model
from tests.fixtures.models import torch_export
from tests.graph.helpers import assert_same_outputs
from tests.graph.pattern_models import BUILDERS, FEATURES, wrap


def _kinds(model: onnx.ModelProto) -> list[str]:
    return [match.kind for match in find_patterns(_typed(model))]


def _typed(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with inferred shapes, and not normalized (which fuses what it can)."""
    return onnx.shape_inference.infer_shapes(model)


@pytest.mark.parametrize("name", BUILDERS)
def test_each_exporter_form_is_recognized_as_one_function(name):
    builder, kind = BUILDERS[name]
    model = _typed(wrap(builder))
    (match,) = find_patterns(model)
    assert match.kind == kind
    assert match.source == "x" and match.output == "y"
    function_nodes = [n.name for n in model.graph.node if not n.name.startswith("matmul")]
    assert sorted(match.nodes) == sorted(function_nodes)


@pytest.mark.parametrize("name", [n for n, (_, kind) in BUILDERS.items() if kind in FUSED_OPS])
def test_fusion_keeps_the_float_function(name):
    builder, kind = BUILDERS[name]
    model = wrap(builder, opset=20)
    normalized = normalize(model)
    op_types = [n.op_type for n in normalized.graph.node]
    assert op_types == ["MatMul", FUSED_OPS[kind][0], "MatMul"]
    feeds = {
        "inp": np.random.default_rng(3).standard_normal((1, 16, FEATURES)).astype(np.float32) * 3
    }
    assert_same_outputs(model, normalized, feeds)


def test_the_plan_says_what_was_fused():
    model = wrap(BUILDERS["layer_norm_keras"][0], opset=17)
    data = np.random.default_rng(1).standard_normal((8, 16, FEATURES)).astype(np.float32)
    result = eightbit.quantize(model, data, QuantConfig(), check_samples=0, improve="fast")
    (fused,) = [n for n in result.plan.nodes if n.op_type == "LayerNormalization"]
    assert not fused.quantized
    assert fused.reason == (
        "LayerNorm written as 12 ops (x -> y) into LayerNormalization: "
        "kept in float as one unit, int8 only at its boundary"
    )


def test_below_the_fused_ops_opset_the_function_stays_written_out():
    normalized = normalize(wrap(BUILDERS["layer_norm_torch"][0], opset=13))
    assert "LayerNormalization" not in [n.op_type for n in normalized.graph.node]
    assert _kinds(normalized) == ["LayerNorm"]


@pytest.mark.parametrize(
    "name", ["layer_norm_torch", "layer_norm_keras", "gelu_erf_keras", "gelu_tanh_cube"]
)
def test_an_unfused_function_is_a_float_island_with_int8_at_its_boundary(name):
    builder, kind = BUILDERS[name]
    model = wrap(builder, opset=13)
    data = np.random.default_rng(1).standard_normal((16, 16, FEATURES)).astype(np.float32)
    result = eightbit.quantize(model, data, QuantConfig(), check_samples=0, improve="fast")
    function = {n.name for n in model.graph.node if not n.name.startswith("matmul")}
    for node in result.plan.nodes:  # the plan says why each node of the function is float
        if node.name in function:
            assert not node.quantized and kind in node.reason and "float" in node.reason
    quantized = {n.name for n in result.plan.nodes if n.quantized}
    assert quantized == {"matmul_in", "matmul_out"}
    # Quantized tensors: the input, the function's input and output, the model's output;
    # nothing inside the function. ONNX Runtime runs it in float (it may fuse it itself).
    assert [n.op_type for n in result.model.graph.node].count("QuantizeLinear") == 4
    assert float_nodes_in_ort(result.model)


@pytest.mark.parametrize("name", ["silu", "hard_swish"])
def test_silu_and_unfused_hard_swish_stay_int8(name):
    # Measured (§Q12): int8 Sigmoid/Mul is faster than a float island at the same SQNR.
    graph = Graph(normalize(wrap(BUILDERS[name][0], opset=13)))
    assert float_islands(graph) == {}
    assert BUILDERS[name][1] not in ISLAND_KINDS


def test_a_layer_norm_over_a_symbolic_size_is_not_fused():
    nodes, arrays = BUILDERS["layer_norm_torch"][0]()
    shape = ["batch", "tokens", "features"]
    model = make_model(nodes, [("x", shape)], [("y", shape)], arrays, opset=17)
    assert "LayerNormalization" not in [n.op_type for n in normalize(model).graph.node]
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_value = FEATURES  # planted: fixed
    assert "LayerNormalization" in [n.op_type for n in normalize(model).graph.node]


def test_a_shared_intermediate_is_not_a_function():
    model = wrap(BUILDERS["gelu_erf"][0])
    model.graph.output.append(
        onnx.helper.make_tensor_value_info("erf", onnx.TensorProto.FLOAT, None)
    )
    assert "GELU" not in _kinds(model)


def test_a_wrong_constant_is_not_the_function():
    model = wrap(BUILDERS["gelu_tanh_pow"][0])
    for tensor in model.graph.initializer:
        if tensor.name == "coef":
            tensor.CopyFrom(onnx.numpy_helper.from_array(np.array(0.05, np.float32), "coef"))
    assert _kinds(model) == []


class _HandWritten(torch.nn.Module):
    """A transformer MLP block as older code wrote it: LayerNorm and GELU by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(FEATURES, 2 * FEATURES)
        self.fc2 = torch.nn.Linear(2 * FEATURES, FEATURES)
        self.gamma = torch.nn.Parameter(1 + 0.1 * torch.randn(FEATURES))
        self.beta = torch.nn.Parameter(0.1 * torch.randn(FEATURES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(-1, keepdim=True)
        var = ((x - mean) ** 2).mean(-1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + 1e-5) * self.gamma + self.beta
        h = self.fc1(x)
        h = 0.5 * h * (1.0 + torch.erf(h / 1.4142135623730951))
        h = self.fc2(h)
        return torch.softmax(h - h.amax(-1, keepdim=True), -1) + torch.sigmoid(h) * h


@pytest.mark.parametrize("opset", [13, 17, 20])
def test_a_torch_module_written_out_by_hand_is_recognized(opset, tmp_path):
    torch.manual_seed(0)
    model = torch_export(_HandWritten().eval(), torch.randn(1, 8, FEATURES), opset=opset)
    normalized = normalize(model)
    op_types = [n.op_type for n in normalized.graph.node]
    remaining = sorted(match.kind for match in find_patterns(normalized))
    expected = {13: ["GELU", "LayerNorm", "SiLU"], 17: ["GELU", "SiLU"], 20: ["SiLU"]}[opset]
    assert remaining == expected
    assert ("LayerNormalization" in op_types) == (opset >= 17)
    assert ("Gelu" in op_types) == (opset >= 20)
    assert "Softmax" in op_types
    feeds = {
        model.graph.input[0].name: np.random.default_rng(0)
        .standard_normal((1, 8, FEATURES))
        .astype(np.float32)
    }
    assert_same_outputs(model, normalized, feeds)
