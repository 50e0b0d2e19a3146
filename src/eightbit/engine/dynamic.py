"""Prepare for a dynamic-mode model (docs/numerics.md §D): its nodes become steps in order.

``DynamicQuantizeLinear``, ``MatMulInteger`` and the ``Gather`` of an integer table run on
the engine's own kernels (``kernels.dynamic``), equal to ONNX Runtime's integers. Every
other node (the rescaling ``Cast``/``Mul``, a per-row scale computed in the graph, the
float islands: LayerNorm, Softmax, GELU, ...) is a float step run by ``onnx.reference`` and
listed in ``Program.float_nodes`` with its reason, so generated C refuses it by name.
"""

from __future__ import annotations

import numpy as np
import onnx

from eightbit.engine.floats import FloatNodeStep
from eightbit.engine.kernels.dynamic import dynamic_step
from eightbit.engine.program import FloatNode, Program, Step
from eightbit.graph import Graph, Node
from eightbit.plan import QuantPlan

# Every float node of a dynamic-mode program gives a reason that starts so (the plan's own
# reasons for the model's nodes do too: export.dynamic.FLOAT_REASON).
DYNAMIC_PREFIX = "dynamic mode"
HELPER_REASON = f"{DYNAMIC_PREFIX}: float arithmetic around an int8 product (scales, casts)"


def build_dynamic_program(model: onnx.ModelProto, plan: QuantPlan) -> Program:
    """The program of a model written by ``export.dynamic.to_dynamic`` from ``plan``."""
    graph = Graph(model)
    reasons = {d.name: d.reason for d in plan.nodes if not d.quantized}
    opsets = tuple((o.domain, int(o.version)) for o in model.opset_import)
    protos = {p.name: p for p in model.graph.node}
    steps: list[Step] = []
    float_nodes: list[FloatNode] = []
    for node in graph.nodes:
        step = dynamic_step(node, _integer_table(node, graph))
        if step is None:
            reason = reasons.get(node.name) or HELPER_REASON
            if not reason.startswith(DYNAMIC_PREFIX):  # excluded by choice, by the budget
                reason = f"{DYNAMIC_PREFIX}: {reason}"
            proto = protos[node.name].SerializeToString()
            step = FloatNodeStep(
                node.name, tuple(node.inputs), tuple(node.outputs), proto, opsets, reason
            )
            float_nodes.append(FloatNode(node.name, node.op_type, reason))
        steps.append(step)
    read = {name for step in steps for name in step.inputs}
    constants = {name: np.asarray(graph.initializers[name]) for name in graph.initializers}
    return Program(
        steps=tuple(steps),
        inputs=tuple(info.name for info in graph.inputs),
        outputs=tuple(info.name for info in graph.outputs),
        constants={name: value for name, value in constants.items() if name in read},
        float_nodes=tuple(float_nodes),
        input_infos=tuple(graph.inputs),
    )


def _integer_table(node: Node, graph: Graph) -> bool:
    """Whether the node's first input is a constant of integers (an int8 table)."""
    first = node.inputs[0] if node.inputs else ""
    return first in graph.initializers and graph.initializers[first].dtype.kind in "iu"
