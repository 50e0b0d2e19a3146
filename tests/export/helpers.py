"""Shared by the quantization tests: min/max ranges from ONNX Runtime, the whole pipeline from
a float model to a QDQ model, and the oracles that run it.

Ranges are computed here with plain ONNX Runtime (the tests of eightbit.calibrate cover
calibration itself), so these tests depend only on the code under test and on oracles.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper, version_converter
from onnx.reference import ReferenceEvaluator

from eightbit.export import to_qdq
from eightbit.graph import Graph, normalize, with_outputs
from eightbit.graph.session import EXACT_INT8_ENTRY
from eightbit.plan import QuantPlan, activation_tensors_to_calibrate, make_plan
from eightbit.quant import QuantConfig

FLOAT = TensorProto.FLOAT


@dataclass(frozen=True)
class Quantized:
    float_model: onnx.ModelProto  # normalized
    plan: QuantPlan
    qdq: onnx.ModelProto


def session(
    model: onnx.ModelProto, *, optimized: bool, optimized_path: str | None = None
) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    options.add_session_config_entry(*EXACT_INT8_ENTRY)
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        if optimized
        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    if optimized_path is not None:
        options.optimized_model_filepath = optimized_path
    return ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def run(model: onnx.ModelProto, feeds: dict[str, np.ndarray], *, optimized: bool) -> np.ndarray:
    """The first output of ``model`` under ONNX Runtime (int8 kernels when ``optimized``)."""
    return np.asarray(session(model, optimized=optimized).run(None, feeds)[0])


def run_reference(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """The first output under onnx.reference: QDQ semantics computed in plain numpy.

    onnx.reference implements QuantizeLinear/DequantizeLinear from opset 19 on; before
    that they differ only by float8 types, so the model is converted to opset 19 first.
    """
    converted = version_converter.convert_version(model, max(19, _opset(model)))
    return np.asarray(ReferenceEvaluator(converted).run(None, feeds)[0])


def _opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def optimized_op_types(model: onnx.ModelProto) -> list[str]:
    """Node types of the graph ONNX Runtime actually runs (its optimized model file)."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "optimized.onnx")
        session(model, optimized=True, optimized_path=path)
        return [node.op_type for node in onnx.load(path).graph.node]


def min_max_ranges(
    model: onnx.ModelProto, names: Sequence[str], feeds: dict[str, np.ndarray]
) -> dict[str, tuple[float, float]]:
    exposed = with_outputs(model, list(names))
    values = session(exposed, optimized=False).run(list(names), feeds)
    return {name: (float(v.min()), float(v.max())) for name, v in zip(names, values, strict=True)}


def quantize(
    model: onnx.ModelProto, feeds: dict[str, np.ndarray], config: QuantConfig | None = None
) -> Quantized:
    """normalize -> calibrate (min/max over ``feeds``) -> plan -> QDQ."""
    config = config or QuantConfig()
    normalized = normalize(model)
    graph = Graph(normalized)
    names = activation_tensors_to_calibrate(graph, config)
    plan = make_plan(graph, min_max_ranges(normalized, names, feeds), config)
    return Quantized(normalized, plan, to_qdq(normalized, plan))


def output_scale(quantized: Quantized) -> float:
    """Scale of the model's (first) output tensor in the plan."""
    name = quantized.float_model.graph.output[0].name
    return float(quantized.plan.tensors[name].scale)


def scale_initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Every scale read by a QuantizeLinear or DequantizeLinear node of ``model``."""
    initializers = {t.name: t for t in model.graph.initializer}
    scales = {}
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            scales[node.input[1]] = numpy_helper.to_array(initializers[node.input[1]])
    return scales


def make_model(
    nodes: Sequence[onnx.NodeProto],
    inputs: Sequence[tuple[str, Sequence[int | str]]],
    outputs: Sequence[tuple[str, Sequence[int | str] | None]],
    initializers: dict[str, np.ndarray] | None = None,
    opset: int = 13,
) -> onnx.ModelProto:
    """A float model from nodes, (name, shape) inputs/outputs and named arrays."""
    graph = helper.make_graph(
        list(nodes),
        "test",
        [helper.make_tensor_value_info(name, FLOAT, list(shape)) for name, shape in inputs],
        [
            helper.make_tensor_value_info(name, FLOAT, None if shape is None else list(shape))
            for name, shape in outputs
        ],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in (initializers or {}).items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def normal(*shape: int, seed: int = 0, scale: float = 1.0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)
