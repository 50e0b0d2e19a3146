"""The float and int8 models of an analysis, loaded and checked against each other.

The float model is normalized (as ``eightbit quantize`` does before quantizing), so its
tensor names are those of the graph that was quantized; when the int8 model's stem reads a
SpaceToDepth (docs/numerics.md §Q11), the float model is compared in that form too, and the
int8 model is read with its integer moves back between DQ and Q. The two models must take
the same inputs and give the same outputs. eightbit's plan, when it lies beside the int8
model as ``<stem>.plan.json``, supplies fallback reasons and decisions.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

import numpy as np
import onnx

from eightbit.analysis.qdq import QdqModel, read_qdq
from eightbit.errors import ConfigError, ModelError
from eightbit.graph import Graph, TensorInfo, load_model, normalize
from eightbit.graph.stem import has_space_to_depth, space_to_depth_stems
from eightbit.ops.embedding import computes_on_int8_at_run_time
from eightbit.plan import QuantPlan, plan_path_for
from eightbit.qdq import expand, is_qdq

ModelLike = str | os.PathLike[str] | onnx.ModelProto
PlanLike = QuantPlan | str | os.PathLike[str]
# What eightbit.calibrate.open_data reads: a path, arrays, or an iterable of them.
DataLike: TypeAlias = (
    "str | os.PathLike[str] | Mapping[str, np.ndarray] | np.ndarray"
    " | Iterable[Mapping[str, np.ndarray] | np.ndarray]"
)


@dataclass(frozen=True)
class ModelPair:
    """The two models as analysed (``float_model``, ``int8_model``: the same structure) and
    as deployed (``deployed_float``, ``deployed_int8``: what latency is measured on)."""

    float_model: onnx.ModelProto
    int8_model: onnx.ModelProto
    float_graph: Graph
    int8_graph: Graph
    qdq: QdqModel
    plan: QuantPlan | None
    float_path: Path | None
    int8_path: Path | None
    deployed_float: onnx.ModelProto
    deployed_int8: onnx.ModelProto


def _check_plan_matches(plan: QuantPlan, int8_graph: Graph) -> None:
    """Refuse a plan made for another model: its decisions would be shown as this one's.

    Every node of the int8 model other than its QuantizeLinear/DequantizeLinear pairs has
    a decision in the plan it was exported from (the engine requires the same). A dynamic
    model (numerics §D) rewrites its int8 nodes, so there every float node of the plan must
    be in the model instead.
    """
    decided = {decision.name for decision in plan.nodes}
    present = {node.name for node in int8_graph.nodes}
    if plan.config.mode == "dynamic":
        missing = [d.name for d in plan.fallbacks() if d.name not in present]
    else:
        missing = [
            node.name for node in int8_graph.nodes if not is_qdq(node) and node.name not in decided
        ]
    if missing:
        raise ConfigError(
            f"the plan does not belong to this int8 model: node(s) {missing[:3]} have no "
            "decision in it; give the plan eightbit quantize wrote beside this model"
        )


def load_pair(
    float_model: ModelLike,
    int8_model: ModelLike,
    *,
    plan: PlanLike | None = None,
    find_plan: bool = True,
) -> ModelPair:
    """Load, normalize and check the two models.

    ``plan``: a plan or its file; otherwise, with ``find_plan``, the plan beside the int8
    file when there is one.
    """
    float_path = None if isinstance(float_model, onnx.ModelProto) else Path(float_model)
    int8_path = None if isinstance(int8_model, onnx.ModelProto) else Path(int8_model)
    deployed_float = normalize(load_model(float_model))
    deployed_int8 = load_model(int8_model)
    quantized = expand(deployed_int8)
    normalized = _same_stems(deployed_float, quantized)
    float_graph, int8_graph = Graph(normalized), Graph(quantized)
    _check_interfaces(float_graph, int8_graph)
    qdq = read_qdq(int8_graph, float_graph)
    dynamic = any(computes_on_int8_at_run_time(node) for node in int8_graph.nodes)
    if not qdq.activations and not qdq.weights and not dynamic:
        raise ModelError(
            "the int8 model has no QuantizeLinear/DequantizeLinear pairs matching the float "
            "model's tensors; give the QDQ model quantized from this float model"
        )
    if plan is None and find_plan and int8_path is not None and plan_path_for(int8_path).is_file():
        plan = plan_path_for(int8_path)
    if plan is not None and not isinstance(plan, QuantPlan):
        plan = QuantPlan.load(plan)
    if plan is not None:
        _check_plan_matches(plan, int8_graph)
    return ModelPair(
        normalized,
        quantized,
        float_graph,
        int8_graph,
        qdq,
        plan,
        float_path,
        int8_path,
        deployed_float,
        deployed_int8,
    )


def _same_stems(float_model: onnx.ModelProto, int8_model: onnx.ModelProto) -> onnx.ModelProto:
    """``float_model`` with the space-to-depth stems of ``int8_model`` (the same rewrite
    ``quantize`` made), or as it is when the int8 model has none."""
    if not has_space_to_depth(int8_model) or has_space_to_depth(float_model):
        return float_model
    rewritten, _ = space_to_depth_stems(float_model)
    return rewritten


def _check_interfaces(float_graph: Graph, int8_graph: Graph) -> None:
    for kind, floats, int8s in (
        ("inputs", float_graph.inputs, int8_graph.inputs),
        ("outputs", float_graph.outputs, int8_graph.outputs),
    ):
        if [info.name for info in floats] != [info.name for info in int8s]:
            raise ModelError(
                f"the float model's {kind} are {_describe(floats)} but the int8 model's are "
                f"{_describe(int8s)}; give the int8 model quantized from this float model"
            )
        for left, right in zip(floats, int8s, strict=True):
            if left.dtype != right.dtype or not _shapes_agree(left, right):
                raise ModelError(
                    f"{kind[:-1]} {left.name!r} is {_describe([left])} in the float model but "
                    f"{_describe([right])} in the int8 model; give the int8 model quantized "
                    "from this float model"
                )


def _shapes_agree(left: TensorInfo, right: TensorInfo) -> bool:
    if left.shape is None or right.shape is None:
        return True
    if len(left.shape) != len(right.shape):
        return False
    return all(
        a == b or not (isinstance(a, int) and isinstance(b, int))
        for a, b in zip(left.shape, right.shape, strict=True)
    )


def _describe(infos: list[TensorInfo]) -> str:
    parts = []
    for info in infos:
        dims = (
            "?"
            if info.shape is None
            else ", ".join("?" if d is None else str(d) for d in info.shape)
        )
        parts.append(f"{info.name} ({info.dtype} [{dims}])")
    return "[" + ", ".join(parts) + "]"
