"""Functions written as elementary ops: LayerNorm, GELU, Softmax, SiLU, HardSwish, HardSigmoid.

tf2onnx, Keras and older PyTorch exporters write these as chains of ReduceMean, Sub, Pow,
Sqrt, Div, Erf, Tanh, Exp, Mul and Add, in many orders. Quantizing every Mul and Add inside
them rounds intermediate values that have nothing to do with the function's output range
(a variance, ``1 + erf``, an ``eps`` stored in int8), so eightbit treats each as one unit
(docs/numerics.md §Q12).

Recognition is by function, not by one node order: from an anchor op (ReduceMean, Exp, Erf,
Tanh, Sigmoid, HardSigmoid, Clip) it takes candidate inputs ``x`` a few nodes upstream and
candidate outputs ``t`` downstream, keeps the region between them when it is closed (every
node reads only ``x``, constants or region tensors; only ``t`` is read outside), and runs it
with ``onnx.reference`` on probe inputs against the definition of each function. What
matches is the function, whatever the exporter's order; the parameters (axis, ``eps``,
LayerNorm's ``gamma`` and ``beta``) are read from the region's own outputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from eightbit.graph._proto import FreshNames, graph_names
from eightbit.graph.view import Graph, Node

# Ops a decomposed function is written with.
_ELEMENTARY = frozenset(
    {
        "Add",
        "Sub",
        "Mul",
        "Div",
        "Pow",
        "Sqrt",
        "Reciprocal",
        "Neg",
        "ReduceMean",
        "ReduceSum",
        "ReduceMax",
        "Exp",
        "Erf",
        "Tanh",
        "Sigmoid",
        "HardSigmoid",
        "Clip",
        "Relu",
        "Min",
        "Max",
    }
)
_ANCHORS = {
    "ReduceMean": ("LayerNorm",),
    "Exp": ("Softmax",),
    "Erf": ("GELU",),
    "Tanh": ("GELU-tanh",),
    "Sigmoid": ("SiLU",),
    "HardSigmoid": ("HardSwish",),
    "Clip": ("HardSwish", "HardSigmoid"),
    "Relu": ("HardSwish", "HardSigmoid"),
}
_UPSTREAM = 5  # how far above the anchor the input x may be
_DOWNSTREAM = 16  # how many nodes below the anchor the output t may be
_PROBE_ROWS = 8
_SYMBOLIC_DIM = 2
# Float tolerance of a match, relative to max(1, max |output|): float32 rounding of a few
# ops is ~1e-6; the tanh form of GELU differs from the erf form by up to 5e-4.
_TOLERANCE = 2e-5
_HARD_SIGMOID_SLOPES = (1 / 6, 0.2)  # PyTorch/ONNX's and Keras's
# Unfused functions kept in float as one unit (measured, docs/numerics.md §Q12).
ISLAND_KINDS = frozenset({"LayerNorm", "GELU", "GELU-tanh", "Softmax"})


@dataclass(frozen=True)
class Match:
    """One recognized function: ``nodes`` (names, in graph order) compute ``output`` from
    ``source``. ``params``: axis / axes, epsilon, alpha; ``arrays``: LayerNorm's scale and
    bias over the normalized axes."""

    kind: str
    source: str
    output: str
    nodes: tuple[str, ...]
    params: dict[str, float | int | tuple[int, ...]] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict, compare=False)

    def describe(self) -> str:
        return f"{self.kind} written as {len(self.nodes)} ops ({self.source} -> {self.output})"


def find_patterns(model: onnx.ModelProto) -> tuple[Match, ...]:
    """Every recognized function of ``model`` (normalized), largest first, disjoint."""
    if not any(node.op_type in _ANCHORS for node in model.graph.node):
        return ()
    return _search(Graph(model))


def float_islands(graph: Graph) -> dict[str, str]:
    """node name -> why it stays float: every node of a recognized function that
    ``fuse_patterns`` left as elementary ops, and the float ops it fused (§Q12)."""
    reasons = {
        node.name: f"{node.doc_string.removeprefix(_FUSED_NOTE)}: {_FLOAT_UNIT}"
        for node in graph.model.graph.node
        if node.doc_string.startswith(_FUSED_NOTE) and node.op_type in _FLOAT_FUSED_OPS
    }
    reasons.update(
        (node.name, _SMOOTHING_REASON)
        for node in graph.model.graph.node
        if node.doc_string.startswith(SMOOTHING_NOTE) and node.op_type == "Mul"
    )
    reasons.update(
        (node.name, _OUTLIER_REASON)
        for node in graph.model.graph.node
        if node.doc_string.startswith(OUTLIER_NOTE) and node.op_type == "MatMul"
    )
    if any(node.op_type in _ANCHORS for node in graph.nodes):
        reasons.update(_islands_cached(_key(graph), graph))
    return reasons


def _key(graph: Graph) -> tuple[object, ...]:
    """What recognition reads: the nodes and the small constants (eps, 0.5, sqrt 2, 3, 6)."""
    nodes = tuple((n.name, n.op_type, n.inputs, n.outputs) for n in graph.nodes)
    small = tuple(
        (tensor.name, numpy_helper.to_array(tensor).tobytes())
        for tensor in graph.model.graph.initializer
        if math.prod(tensor.dims) <= _SMALL_CONSTANT
    )
    return nodes, small


_FUSED_NOTE = "eightbit: fused "
# SmoothQuant's Muls (numerics §I.11): they scale a float value before its QuantizeLinear,
# or give float readers X back; quantizing them would round the very outliers they divide.
SMOOTHING_NOTE = "eightbit: SmoothQuant"
_SMOOTHING_REASON = "SmoothQuant's per-channel scales, in float before the int8 boundary"
# The few outlier output channels of a matrix product, computed apart (numerics §I.12):
# values hundreds of times the rest's, whose int8 weight error would dominate the output.
OUTLIER_NOTE = "eightbit: outlier output channels"
_OUTLIER_REASON = "outlier output channels computed apart, in float (a few columns)"
_FLOAT_FUSED_OPS = frozenset({"LayerNormalization", "Gelu", "Softmax"})  # no int8 kernel here
_FLOAT_UNIT = "kept in float as one unit, int8 only at its boundary"
# Planning asks once per plan, and the fallback search plans many times: cache a few models.
_MATCHES: dict[tuple[object, ...], tuple[Match, ...]] = {}
_CACHED_MODELS = 4
_SMALL_CONSTANT = 16  # elements: the constants a function's definition reads (eps, 0.5, 3)


def _islands_cached(key: tuple[object, ...], graph: Graph) -> tuple[tuple[str, str], ...]:
    return tuple(
        (name, f"part of {match.describe()}: {_FLOAT_UNIT}")
        for match in _matches_cached(key, graph)
        if match.kind in ISLAND_KINDS
        for name in match.nodes
    )


def recognized_functions(graph: Graph) -> tuple[Match, ...]:
    """``find_patterns`` on a ``Graph``, cached like ``float_islands`` (planning asks once
    per plan, and the fallback plans many times)."""
    if not any(node.op_type in _ANCHORS for node in graph.nodes):
        return ()
    return _matches_cached(_key(graph), graph)


def _matches_cached(key: tuple[object, ...], graph: Graph) -> tuple[Match, ...]:
    if key not in _MATCHES:
        if len(_MATCHES) >= _CACHED_MODELS:
            _MATCHES.pop(next(iter(_MATCHES)))
        _MATCHES[key] = _search(graph)
    return _MATCHES[key]


def _search(graph: Graph) -> tuple[Match, ...]:
    order = {node.name: i for i, node in enumerate(graph.nodes)}
    found: list[Match] = []
    for anchor in graph.nodes:
        for kind in _ANCHORS.get(anchor.op_type, ()):
            match = _match_at(graph, anchor, kind, order)
            if match is not None:
                found.append(match)
    found.sort(key=lambda m: -len(m.nodes))
    taken: set[str] = set()
    kept = []
    for match in found:
        if taken.isdisjoint(match.nodes):
            kept.append(match)
            taken.update(match.nodes)
    return tuple(sorted(kept, key=lambda m: order[m.nodes[0]]))


def _match_at(graph: Graph, anchor: Node, kind: str, order: dict[str, int]) -> Match | None:
    """The largest region through ``anchor`` that computes ``kind``, or None.
    ``order``: node name -> position in the graph (topological)."""
    outputs = _downstream(graph, anchor, order)
    for source in _upstream(graph, anchor):
        for output in reversed(outputs):
            region = _region(graph, source, output, order)
            if region is None or anchor.name not in {n.name for n in region}:
                continue
            match = _verify(graph, kind, source, output, region)
            if match is not None:
                return match
    return None


def _upstream(graph: Graph, anchor: Node) -> list[str]:
    """Candidate inputs ``x``, farthest first: the anchor's variable inputs and, through
    elementary producers, theirs, up to ``_UPSTREAM`` levels above the anchor."""
    depth: dict[str, int] = {}
    frontier = [(anchor, 0)]
    while frontier:
        node, level = frontier.pop()
        for name in node.inputs:
            if not name or name in graph.initializers or depth.get(name, -1) >= level:
                continue
            depth[name] = level
            producer = graph.producer(name)
            if level < _UPSTREAM and producer is not None and producer.op_type in _ELEMENTARY:
                frontier.append((producer, level + 1))
    return sorted(depth, key=lambda name: -depth[name])


def _downstream(graph: Graph, anchor: Node, order: dict[str, int]) -> list[Node]:
    """Elementary nodes reachable from the anchor (anchor included), in graph order."""
    seen = {anchor.name: anchor}
    frontier = [anchor]
    while frontier and len(seen) < _DOWNSTREAM:
        node = frontier.pop()
        for output in node.outputs:
            for reader in graph.consumers(output):
                if reader.op_type in _ELEMENTARY and reader.name not in seen:
                    seen[reader.name] = reader
                    frontier.append(reader)
    return sorted(seen.values(), key=lambda n: order[n.name])


def _region(graph: Graph, source: str, output: Node, order: dict[str, int]) -> list[Node] | None:
    """Nodes on the paths from ``source`` to ``output`` when they form a closed unit."""
    graph_outputs = {info.name for info in graph.outputs}
    region: dict[str, Node] = {}
    pending = [output]
    while pending:
        node = pending.pop()
        if node.name in region:
            continue
        if node.op_type not in _ELEMENTARY or len(region) > 2 * _DOWNSTREAM:
            return None
        region[node.name] = node
        for name in node.inputs:
            if not name or name == source or name in graph.initializers:
                continue
            producer = graph.producer(name)
            if producer is None:
                return None  # another graph input
            pending.append(producer)
    produced = {out for node in region.values() for out in node.outputs}
    for node in region.values():
        foreign = [n for n in node.inputs if n and n not in produced and n != source]
        if any(n not in graph.initializers for n in foreign):
            return None
        for out in node.outputs:
            if out == output.outputs[0]:
                continue
            if out in graph_outputs or any(r.name not in region for r in graph.consumers(out)):
                return None  # an intermediate value is read elsewhere
    if len(output.outputs) != 1 or len(region) < 2:
        return None
    return sorted(region.values(), key=lambda n: order[n.name])


def _verify(graph: Graph, kind: str, source: str, output: Node, region: list[Node]) -> Match | None:
    """The match when the region computes ``kind`` of ``source`` on the probe inputs."""
    info = graph.info(source)
    if info is None or info.shape is None or not info.is_float or len(info.shape) < 1:
        return None
    run = _Runner(graph, source, output.outputs[0], region)
    shape = tuple(d if isinstance(d, int) and d > 0 else _SYMBOLIC_DIM for d in info.shape)
    names = tuple(node.name for node in region)
    check = _CHECKS[kind]
    found = check(run, shape, region, graph)
    if found is None:
        return None
    params, arrays = found
    return Match(kind, source, output.outputs[0], names, params, arrays)


class _Runner:
    """The region as a model of its own, run with ``onnx.reference`` in float64 checks."""

    def __init__(self, graph: Graph, source: str, output: str, region: list[Node]) -> None:
        protos = {node.name: node for node in graph.model.graph.node}
        used = {n for node in region for n in node.inputs if n in graph.initializers}
        initializers = [
            numpy_helper.from_array(np.asarray(graph.initializers[n]), n) for n in sorted(used)
        ]
        info = graph.info(source)
        assert info is not None
        elem = helper.np_dtype_to_tensor_dtype(info.dtype)
        sub = helper.make_graph(
            [protos[node.name] for node in region],
            "pattern",
            [helper.make_tensor_value_info(source, elem, None)],
            [helper.make_tensor_value_info(output, elem, None)],
            initializers,
        )
        model = helper.make_model(sub, opset_imports=graph.model.opset_import)
        self.dtype = info.dtype
        self.source = source
        try:
            self._evaluator: ReferenceEvaluator | None = ReferenceEvaluator(model)
        except Exception:  # an op or attribute onnx.reference does not know: no match
            self._evaluator = None

    def __call__(self, x: np.ndarray) -> np.ndarray | None:
        if self._evaluator is None:
            return None
        try:
            with np.errstate(all="ignore"):  # a wrong candidate may overflow: no match
                (y,) = self._evaluator.run(None, {self.source: x.astype(self.dtype)})
        except Exception:  # shapes the region does not accept (a probe's, not the model's)
            return None
        y = np.asarray(y, np.float64)
        return y if y.shape == x.shape else None


def _close(got: np.ndarray | None, want: np.ndarray) -> bool:
    if got is None or got.shape != want.shape or not np.all(np.isfinite(got)):
        return False
    scale = max(1.0, float(np.abs(want).max()))
    return float(np.abs(got - want).max()) <= _TOLERANCE * scale


def _probe(shape: tuple[int, ...], scale: float, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape) * scale


Found = tuple[dict[str, float | int | tuple[int, ...]], dict[str, np.ndarray]] | None
Check = Callable[[_Runner, tuple[int, ...], list[Node], Graph], Found]


def _elementwise(function: Callable[[np.ndarray], np.ndarray]) -> Check:
    """A check for a parameter-free elementwise function (probes at two scales)."""

    def check(run: _Runner, shape: tuple[int, ...], region: list[Node], graph: Graph) -> Found:
        for seed, scale in ((0, 3.0), (1, 0.5)):
            x = _probe(shape, scale, seed).astype(np.float32).astype(np.float64)
            if not _close(run(x), function(x)):
                return None
        return {}, {}

    return check


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def _gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def _silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


def _hard_swish(x: np.ndarray) -> np.ndarray:
    return x * np.clip(x / 6.0 + 0.5, 0.0, 1.0)


def _hard_sigmoid(run: _Runner, shape: tuple[int, ...], region: list[Node], graph: Graph) -> Found:
    for alpha in _HARD_SIGMOID_SLOPES:
        probes = [_probe(shape, scale, seed) for seed, scale in ((0, 4.0), (1, 1.0))]
        if all(_close(run(x), np.clip(alpha * x + 0.5, 0.0, 1.0)) for x in probes):
            return {"alpha": alpha, "beta": 0.5}, {}
    return None


def _reduce_axes(node: Node, graph: Graph, rank: int) -> tuple[int, ...] | None:
    """A Reduce node's axes, non-negative (attribute, or constant input from opset 13/18)."""
    axes = node.attrs.get("axes")
    if axes is None and len(node.inputs) > 1 and node.inputs[1] in graph.initializers:
        axes = np.asarray(graph.initializers[node.inputs[1]]).reshape(-1).tolist()
    if axes is None:
        return None
    return tuple(sorted(int(a) % rank for a in axes))


def _softmax(run: _Runner, shape: tuple[int, ...], region: list[Node], graph: Graph) -> Found:
    rank = len(shape)
    for node in region:
        if node.op_type != "ReduceSum":
            continue
        axes = _reduce_axes(node, graph, rank)
        if axes is None or len(axes) != 1:
            continue
        axis = axes[0]
        for seed, scale in _softmax_probes(region):
            x = _probe(shape, scale, seed).astype(np.float32).astype(np.float64)
            e = np.exp(x - x.max(axis=axis, keepdims=True))
            if not _close(run(x), e / e.sum(axis=axis, keepdims=True)):
                break
        else:
            return {"axis": axis}, {}
    return None


def _softmax_probes(region: list[Node]) -> tuple[tuple[int, float], ...]:
    """(seed, scale) of the probes. Written without the max taken out (Exp, ReduceSum, Div:
    tf2onnx, some torch exports) the region overflows float32 where ``x`` passes ~88, as
    the model itself does: such a region is probed at moderate scales only."""
    if any(node.op_type == "ReduceMax" for node in region):
        return ((0, 3.0), (1, 30.0))
    return ((0, 3.0), (1, 0.5))


def _layer_norm(run: _Runner, shape: tuple[int, ...], region: list[Node], graph: Graph) -> Found:
    """y = n · gamma + beta, n = (x - mean) / sqrt(var + eps) over trailing axes."""
    rank = len(shape)
    means = [n for n in region if n.op_type == "ReduceMean"]
    axes = _reduce_axes(means[0], graph, rank) if means else None
    if axes is None or axes != tuple(range(axes[0], rank)) or axes[0] == 0:
        return None
    declared = graph.info(run.source)
    if declared is None or declared.shape is None:
        return None
    if not all(isinstance(d, int) and d > 0 for d in declared.shape[axes[0] :]):
        return None  # gamma and beta need the normalized sizes
    normalized = shape[axes[0] :]
    rows = max(_PROBE_ROWS, 2)
    probe_shape = (rows, *normalized)
    epsilons = {0.0}
    for node in region:
        if node.op_type == "Add":
            for name in node.inputs:
                if name in graph.initializers and np.asarray(graph.initializers[name]).size == 1:
                    epsilons.add(float(np.asarray(graph.initializers[name]).reshape(-1)[0]))
    lead = (1,) * (axes[0] - 1)
    x = _probe(probe_shape, 2.0, 0).astype(np.float32).astype(np.float64)
    y, y_neg = run(x.reshape(*lead, *probe_shape)), run(-x.reshape(*lead, *probe_shape))
    if y is None or y_neg is None:
        return None
    y, y_neg = y.reshape(probe_shape), y_neg.reshape(probe_shape)
    for eps in sorted(epsilons, reverse=True):
        n = _normalize(x, eps)
        # n(-x) = -n(x): gamma from the difference, beta from the sum, row by row where |n|
        # is largest (the best conditioned).
        best = np.abs(n).argmax(axis=0)
        pick = np.take_along_axis
        n_best = pick(n, best[None], 0)[0]
        gamma = (pick(y, best[None], 0)[0] - pick(y_neg, best[None], 0)[0]) / (2.0 * n_best)
        beta = (pick(y, best[None], 0)[0] + pick(y_neg, best[None], 0)[0]) / 2.0
        if not _close(y, n * gamma + beta):
            continue
        small = _probe(probe_shape, math.sqrt(eps) if eps else 1e-2, 1)
        small = small.astype(np.float32).astype(np.float64)
        got = run(small.reshape(*lead, *probe_shape))
        if got is not None and _close(
            got.reshape(probe_shape), _normalize(small, eps) * gamma + beta
        ):
            arrays = {"scale": gamma.astype(np.float32), "bias": beta.astype(np.float32)}
            return {"axis": axes[0], "epsilon": eps}, arrays
    return None


def _normalize(x: np.ndarray, eps: float) -> np.ndarray:
    axes = tuple(range(1, x.ndim))
    centred = x - x.mean(axis=axes, keepdims=True)
    return centred / np.sqrt((centred**2).mean(axis=axes, keepdims=True) + eps)


_CHECKS = {
    "LayerNorm": _layer_norm,
    "Softmax": _softmax,
    "GELU": _elementwise(_gelu),
    "GELU-tanh": _elementwise(_gelu_tanh),
    "SiLU": _elementwise(_silu),
    "HardSwish": _elementwise(_hard_swish),
    "HardSigmoid": _hard_sigmoid,
}

# kind -> (ONNX op, first default-domain opset that has it with ONNX Runtime CPU kernels).
FUSED_OPS = {
    "Softmax": ("Softmax", 13),  # from 13 on Softmax normalizes one axis, as written
    "LayerNorm": ("LayerNormalization", 17),
    "GELU": ("Gelu", 20),
    "GELU-tanh": ("Gelu", 20),
    "HardSwish": ("HardSwish", 14),
    "HardSigmoid": ("HardSigmoid", 6),
}


def fuse_patterns(model: onnx.ModelProto) -> list[Match]:
    """Replace each recognized function that the model's opset has as one ONNX op by that op
    (in place); return what was fused. The others stay as they are (``float_islands``)."""
    opset = Graph(model).opset
    matches = [
        m for m in find_patterns(model) if m.kind in FUSED_OPS and opset >= FUSED_OPS[m.kind][1]
    ]
    if not matches:
        return []
    graph = model.graph
    fresh = FreshNames(graph_names(graph))
    replaced = {name: match for match in matches for name in match.nodes}
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        match = replaced.get(node.name)
        if match is None:
            nodes.append(node)
        elif node.name == match.nodes[-1]:  # the output's producer: the fused node's place
            nodes.append(_fused_node(match, fresh, graph))
    graph.ClearField("node")
    graph.node.extend(nodes)
    return matches


def _fused_node(match: Match, fresh: FreshNames, graph: onnx.GraphProto) -> onnx.NodeProto:
    op_type = FUSED_OPS[match.kind][0]
    name = fresh(f"{match.kind}_{match.nodes[-1]}")
    inputs = [match.source]
    for role in ("scale", "bias"):
        if role in match.arrays:
            tensor = numpy_helper.from_array(match.arrays[role], fresh(f"{name}_{role}"))
            graph.initializer.append(tensor)
            inputs.append(tensor.name)
    attrs: dict[str, object] = {}
    if match.kind == "GELU-tanh":
        attrs["approximate"] = "tanh"
    for key in ("axis", "epsilon", "alpha", "beta"):
        if key in match.params:
            attrs[key] = match.params[key]
    fused = helper.make_node(op_type, inputs, [match.output], name=name)
    fused.attribute.extend(helper.make_attribute(key, value) for key, value in attrs.items())
    fused.doc_string = f"{_FUSED_NOTE}{match.describe()} into {op_type}"
    return fused
