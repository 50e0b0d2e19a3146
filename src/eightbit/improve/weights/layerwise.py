"""What the layer-wise steps (learned rounding, reconstruction) share: the layers they
choose weights for, a layer's input as the float or the QDQ network computes it, and the
output SQNR they report. Their samples are read by ``measure.read_samples``."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import onnx

from eightbit.analysis.metrics import sqnr_db
from eightbit.calibrate.data import Batch
from eightbit.export import to_qdq
from eightbit.graph import Graph, make_session, with_outputs
from eightbit.improve.weights.adaround_rows import ROW_CONTRACTIONS, LayerShape, layer_of
from eightbit.ops import lookup
from eightbit.plan import QuantPlan
from eightbit.quant import dequantize_values, quantize_values


def weight_layers(graph: Graph, plan: QuantPlan) -> tuple[list[LayerShape], list[tuple[str, str]]]:
    """The layers whose weights a layer-wise step chooses, and the quantized ones it leaves,
    with why."""
    quantized = {decision.name for decision in plan.quantized_nodes()}
    layers, skipped = [], []
    for node in graph.nodes:
        spec = lookup(node.op_type, node.domain)
        if node.name not in quantized or spec is None or spec.contraction not in ROW_CONTRACTIONS:
            continue
        found = layer_of(graph, node, plan)
        if isinstance(found, str):
            # A MatMul of two activations has no weight to round: nothing to report.
            weight = None if spec.weight_port is None else node.inputs[spec.weight_port]
            if not spec.weight_may_be_activation or weight in graph.initializers:
                skipped.append((node.name, found))
        else:
            layers.append(found)
    return layers, skipped


class Reader:
    """Reads one tensor of a model for a batch: a graph input directly, else by running it."""

    def __init__(self, model: onnx.ModelProto, tensor: str, threads: int | None) -> None:
        self.tensor = tensor
        self.session = None
        if tensor not in {value.name for value in model.graph.input}:
            self.session = make_session(upstream(model, tensor), threads=threads, lean=True)

    def __call__(self, batch: Batch) -> np.ndarray:
        if self.session is None:
            return np.asarray(batch[self.tensor])
        return np.asarray(self.session.run([self.tensor], dict(batch))[0])


def quantized_reader(
    model: onnx.ModelProto, plan: QuantPlan, tensor: str, threads: int | None
) -> Callable[[Batch], np.ndarray]:
    """The layer's input as the QDQ model of ``model`` computes it (its DequantizeLinear).

    A quantized graph input is fake-quantized here (eq. A.0): to_qdq renames its readers.
    """
    inputs = {value.name for value in model.graph.input}
    if tensor in inputs:
        params = plan.tensors.get(tensor)

        def fake_quantized(batch: Batch) -> np.ndarray:
            values = np.asarray(batch[tensor])
            if params is None:
                return values
            return dequantize_values(quantize_values(values, params), params)

        return fake_quantized
    return Reader(to_qdq(model, plan), tensor, threads)


def upstream(model: onnx.ModelProto, tensor: str) -> onnx.ModelProto:
    """``model`` cut down to the nodes ``tensor`` depends on, with ``tensor`` as its output.

    ONNX Runtime runs every node whatever outputs are asked for, so early layers would pay
    for the whole network. Models with subgraphs (If, Loop) are not cut: their nodes read
    names that the inputs lists do not show.
    """
    exposed = with_outputs(model, [tensor])
    graph = exposed.graph
    outputs = [value for value in graph.output if value.name == tensor]
    graph.ClearField("output")
    graph.output.extend(outputs)
    if any(a.g.node or a.graphs for node in graph.node for a in node.attribute):
        return exposed
    needed = {tensor}
    kept = []
    for node in reversed(graph.node):
        if any(name in needed for name in node.output if name):
            kept.append(node)
            needed.update(name for name in node.input if name)
    kept.reverse()
    initializers = [t for t in graph.initializer if t.name in needed]
    graph.ClearField("node")
    graph.node.extend(kept)
    graph.ClearField("initializer")
    graph.initializer.extend(initializers)
    return exposed


def output_sqnr(
    model: onnx.ModelProto,
    rounded: onnx.ModelProto,
    plan: QuantPlan,
    batches: Sequence[Batch],
    threads: int | None,
    reference: Sequence[np.ndarray] | None = None,
) -> tuple[float, float]:
    """SQNR of the first output, nearest rounding vs the step's weights, on its samples.

    ``reference``: the float model's first output on each batch, when the step has it
    (the reconstruction's float pass reads it: one pass of the float model less)."""
    name = model.graph.output[0].name
    candidates = [to_qdq(model, plan), to_qdq(rounded, plan)]
    if reference is None:
        candidates.insert(0, model)
    sessions = [make_session(candidate, threads=threads) for candidate in candidates]
    outputs: list[list[np.ndarray]] = [[] for _ in sessions]
    for batch in batches:
        for collected, session in zip(outputs, sessions, strict=True):
            collected.append(np.asarray(session.run([name], dict(batch))[0]))
    if reference is not None:
        outputs.insert(0, list(reference))
    floats, nearest, learned = (np.concatenate(values) for values in outputs)
    return sqnr_db(floats, nearest), sqnr_db(floats, learned)
