"""Shared by the analysis, report and CLI tests: a small classifier, its int8 model made with
calibrate + make_plan + to_qdq, files on disk, and a way to plant a wrong scale.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from eightbit.calibrate import CalibrationConfig, Ranges, calibrate
from eightbit.export import to_qdq
from eightbit.graph import Graph, normalize, save_model
from eightbit.plan import QuantPlan, activation_tensors_to_calibrate, make_plan
from eightbit.quant import QuantConfig

CLASSES = 10


def classifier(seed: int = 0, classes: int = CLASSES, name_prefix: str = "") -> onnx.ModelProto:
    """conv1+relu1 -> conv2+relu2 -> add(relu1, relu2) -> pool -> flatten -> fc.

    input ``input`` (batch, 3, 8, 8); output ``logits`` (batch, classes).
    """
    rng = np.random.default_rng(seed)

    def weight(*shape: int, scale: float = 0.4) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    p = name_prefix
    initializers = {
        "w1": weight(8, 3, 3, 3),
        "b1": weight(8, scale=0.1),
        "w2": weight(8, 8, 3, 3, scale=0.2),
        "b2": weight(8, scale=0.1),
        "fc_w": weight(classes, 8),
        "fc_b": weight(classes, scale=0.1),
    }
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], name=f"{p}conv1", pads=[1] * 4),
        helper.make_node("Relu", ["c1"], ["r1"], name=f"{p}relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name=f"{p}conv2", pads=[1] * 4),
        helper.make_node("Relu", ["c2"], ["r2"], name=f"{p}relu2"),
        helper.make_node("Add", ["r1", "r2"], ["sum"], name=f"{p}add"),
        helper.make_node("GlobalAveragePool", ["sum"], ["pooled"], name=f"{p}pool"),
        helper.make_node("Flatten", ["pooled"], ["flat"], name=f"{p}flatten"),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], name=f"{p}fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "classifier",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
        [numpy_helper.from_array(value, key) for key, value in initializers.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def images(count: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, 3, 8, 8)).astype(np.float32)


@dataclass(frozen=True)
class Quantized:
    float_model: onnx.ModelProto  # normalized
    plan: QuantPlan
    qdq: onnx.ModelProto


def planned(
    model: onnx.ModelProto, data: np.ndarray, config: QuantConfig | None = None
) -> tuple[onnx.ModelProto, QuantPlan, Ranges]:
    """normalize -> calibrate (min/max) -> make_plan: the normalized model, plan, ranges."""
    config = config or QuantConfig()
    normalized = normalize(model)
    graph = Graph(normalized)
    ranges = calibrate(
        normalized,
        {"input": data},
        CalibrationConfig(method="minmax"),
        tensors=activation_tensors_to_calibrate(graph, config),
        normalized=True,
    )
    return normalized, make_plan(graph, ranges, config), ranges


def quantize(
    model: onnx.ModelProto, data: np.ndarray, config: QuantConfig | None = None
) -> Quantized:
    """normalize -> calibrate (min/max) -> make_plan -> to_qdq."""
    normalized, plan, _ = planned(model, data, config)
    return Quantized(normalized, plan, to_qdq(normalized, plan))


def scale_name(qdq: onnx.ModelProto, tensor: str) -> str:
    """The scale initializer of the QuantizeLinear -> DequantizeLinear pair writing ``tensor``."""
    for node in qdq.graph.node:
        if node.op_type == "DequantizeLinear" and node.output[0] == tensor:
            return node.input[1]
    raise KeyError(tensor)


def with_scale(qdq: onnx.ModelProto, tensor: str, factor: float) -> onnx.ModelProto:
    """A copy of ``qdq`` whose Q/DQ pair on ``tensor`` uses ``factor`` times its scale."""
    planted = onnx.ModelProto()
    planted.CopyFrom(qdq)
    name = scale_name(planted, tensor)
    for index, tensor_proto in enumerate(planted.graph.initializer):
        if tensor_proto.name == name:
            scaled = numpy_helper.to_array(tensor_proto) * np.float32(factor)
            planted.graph.initializer[index].CopyFrom(numpy_helper.from_array(scaled, name))
    return planted


@dataclass(frozen=True)
class Files:
    float_model: Path
    int8_model: Path
    plan: Path
    data: Path
    labels: Path


def write_files(
    folder: Path, *, samples: int = 24, seed: int = 0, qdq: onnx.ModelProto | None = None
) -> Files:
    """A float model, its int8 model and plan, data and labels, as eightbit writes them."""
    model = classifier(seed)
    quantized = quantize(model, images(32, seed=seed + 1))
    files = Files(
        float_model=folder / "float.onnx",
        int8_model=folder / "int8.onnx",
        plan=folder / "int8.plan.json",
        data=folder / "data.npz",
        labels=folder / "labels.npy",
    )
    save_model(model, files.float_model)
    save_model(qdq or quantized.qdq, files.int8_model)
    quantized.plan.save(files.plan)
    np.savez(files.data, input=images(samples, seed=seed + 2))
    np.save(files.labels, np.arange(samples, dtype=np.int64) % CLASSES)
    return files
