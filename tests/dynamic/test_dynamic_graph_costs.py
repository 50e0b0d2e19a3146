"""Graph-level costs of the dynamic model in ONNX Runtime (docs/numerics.md §D.8)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from eightbit.export.dynamic import plan_dynamic, to_dynamic
from eightbit.graph import Graph, normalize
from eightbit.quant import QuantConfig

WIDTH, TOKENS = 32, 5
# ONNX Runtime's integer products and the index of their weight's zero point
_WEIGHT_ZERO_POINT = {"MatMulInteger": 3, "DynamicQuantizeMatMul": 3, "MatMulIntegerToFloat": 5}


def _residual_block() -> onnx.ModelProto:
    """``LayerNorm(x + reshape(x·W + b, shape(x)))``: a transformer's residual Add before
    its LayerNorm, the product reshaped by a computed shape (as attention's heads are
    merged back), which ONNX Runtime's own shape inference does not follow."""
    rng = np.random.default_rng(0)
    constants = {
        "w": rng.normal(0, 0.2, (WIDTH, WIDTH)).astype(np.float32),
        "b": rng.normal(0, 0.1, WIDTH).astype(np.float32),
        "gamma": np.ones(WIDTH, np.float32),
        "beta": np.zeros(WIDTH, np.float32),
    }
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["mm"], name="mm"),
        helper.make_node("Add", ["mm", "b"], ["projected"], name="bias"),
        helper.make_node("Shape", ["x"], ["shape"], name="shape"),
        helper.make_node("Reshape", ["projected", "shape"], ["merged"], name="merge"),
        helper.make_node("Add", ["x", "merged"], ["summed"], name="residual"),
        helper.make_node("LayerNormalization", ["summed", "gamma", "beta"], ["y"], name="ln"),
    ]
    shape = ["batch", TOKENS, WIDTH]
    graph = helper.make_graph(
        nodes,
        "block",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
        [numpy_helper.from_array(value, name) for name, value in constants.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _optimized_op_types(model: onnx.ModelProto, tmp_path: Path) -> set[str]:
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return {node.op_type for node in onnx.load(options.optimized_model_filepath).graph.node}


def test_onnx_runtime_does_not_fuse_the_residual_add_into_skip_layer_norm(
    tmp_path: Path,
) -> None:
    """The normalized model records every tensor's shape; with those shapes ONNX Runtime
    writes SkipLayerNormalization (slow on CPU). The dynamic model leaves them out."""
    model = normalize(_residual_block())
    assert model.graph.value_info  # what makes the fusion possible
    written = to_dynamic(model, plan_dynamic(Graph(model), QuantConfig(mode="dynamic")))
    assert not written.graph.value_info
    op_types = _optimized_op_types(written, tmp_path)
    assert "LayerNormalization" in op_types
    assert "SkipLayerNormalization" not in op_types
    with_shapes = onnx.ModelProto()
    with_shapes.CopyFrom(written)
    with_shapes.graph.value_info.extend(model.graph.value_info)
    assert "SkipLayerNormalization" in _optimized_op_types(with_shapes, tmp_path)


def test_products_reach_onnx_runtimes_u8_s8_kernels_with_exact_sums(tmp_path: Path) -> None:
    """Both input forms (per tensor: DynamicQuantizeMatMul; per row: MatMulInteger) read
    int8 weights with zero point 0 in ONNX Runtime's optimized graph (§D.2: its u8 × s8
    kernels, not the slower u8 × u8 ones a uint8 weight forces), and the sums are those of
    the float product to within the quantization error."""
    model = normalize(_residual_block())
    for config in (QuantConfig(mode="dynamic"), QuantConfig(mode="dynamic", row_scales=False)):
        written = to_dynamic(model, plan_dynamic(Graph(model), config))
        options = ort.SessionOptions()
        options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
        options.log_severity_level = 3
        ort.InferenceSession(
            written.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        optimized = onnx.load(options.optimized_model_filepath).graph
        stored = {tensor.name: tensor for tensor in optimized.initializer}
        products = [node for node in optimized.node if node.op_type in _WEIGHT_ZERO_POINT]
        assert len(products) == 1, [node.op_type for node in optimized.node]
        product = products[0]
        weight, zero = product.input[1], product.input[_WEIGHT_ZERO_POINT[product.op_type]]
        assert stored[weight].data_type == TensorProto.INT8
        assert stored[zero].data_type == TensorProto.INT8
        assert not numpy_helper.to_array(stored[zero]).any()
        x = np.random.default_rng(1).normal(0, 1, (2, TOKENS, WIDTH)).astype(np.float32)
        float_y = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
        int8_y = ort.InferenceSession(written.SerializeToString()).run(None, {"x": x})[0]
        assert np.abs(float_y - int8_y).max() < 0.1
