"""Report data for the report and CLI tests, built once per model."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from eightbit.analysis import RunOptions
from eightbit.report import ReportData, build_report
from tests.analysis.helpers import quantize


def deep_chain(layers: int, seed: int = 0) -> onnx.ModelProto:
    """``layers`` × (Conv 1×1 2→2 + Relu) on (batch, 2, 2, 2), then a Gemm to 3 classes."""
    rng = np.random.default_rng(seed)
    nodes, initializers = [], []
    source = "input"
    for i in range(layers):
        weight = np.eye(2, dtype=np.float32)[:, :, None, None] * 1.2 + rng.normal(
            0, 0.2, (2, 2, 1, 1)
        ).astype(np.float32)
        initializers.append(numpy_helper.from_array(weight, f"w{i}"))
        nodes.append(helper.make_node("Conv", [source, f"w{i}"], [f"c{i}"], name=f"block{i}/conv"))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"block{i}/relu"))
        source = f"r{i}"
    initializers.append(numpy_helper.from_array(rng.normal(0, 1, (3, 8)).astype(np.float32), "fc"))
    nodes.append(helper.make_node("Flatten", [source], ["flat"], name="flatten"))
    nodes.append(helper.make_node("Gemm", ["flat", "fc"], ["logits"], name="head", transB=1))
    graph = helper.make_graph(
        nodes,
        "deep",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 2, 2, 2])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def deep_report(layers: int = 120) -> ReportData:
    model = deep_chain(layers)
    data = np.abs(np.random.default_rng(1).normal(0, 1, (16, 2, 2, 2))).astype(np.float32)
    quantized = quantize(model, data)
    return build_report(
        model,
        quantized.qdq,
        {"input": data},
        plan=quantized.plan,
        labels=np.arange(16) % 3,
        what_if=1,
        latency_runs=2,
        options=RunOptions(batch_size=8),
    )
