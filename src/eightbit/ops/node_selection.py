"""Which nodes of a graph are quantized, and where each tensor's parameters come from.

These decisions depend only on the graph, the op specs and the configuration, not on
calibrated ranges, so calibration can be told exactly which tensors to observe before it
runs. ``eightbit.plan.make_plan`` then turns the sources into numbers.
(docs/numerics.md §Q5 folds, §Q6 value-preserving ops, §Q8 constants, §Q9 fallback.)
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from eightbit.errors import ConfigError
from eightbit.graph.patterns import float_islands
from eightbit.ops.float_readers import keep_float_before_float
from eightbit.ops.registry import lookup, supported_op_types
from eightbit.ops.spec import OpSpec, optional_input

if TYPE_CHECKING:
    from eightbit.graph import Graph, Node


class Scope(Protocol):
    """Which nodes a user asked to quantize (``QuantConfig`` is one; ``ops`` sits below
    ``quant`` and does not import it, docs/design.md)."""

    @property
    def exclude(self) -> tuple[str, ...]: ...

    @property
    def op_types(self) -> tuple[str, ...] | None: ...


@dataclass(frozen=True)
class Calibrated:
    """Parameters from the calibrated range of ``tensor``, clipped to ``bounds`` if given."""

    tensor: str
    bounds: tuple[float, float] | None = None


@dataclass(frozen=True)
class SameAs:
    """The parameters of another tensor (value-preserving ops, §Q6)."""

    tensor: str


@dataclass(frozen=True)
class Constant:
    """A constant operand: parameters from its own values (§Q8)."""


Source = Calibrated | SameAs | Constant


@dataclass(frozen=True)
class Selection:
    """``reasons``: node name -> why it stays float, None when quantized.
    ``fused``: producer name -> the clamp activation folded into it (if exact, §Q5).
    ``sources``: every quantized activation tensor and constant operand, in topological
    order, with where its parameters come from.
    """

    reasons: Mapping[str, str | None]
    fused: Mapping[str, Node]
    sources: Mapping[str, Source]

    def calibrated_tensors(self) -> list[str]:
        wanted = (s.tensor for s in self.sources.values() if isinstance(s, Calibrated))
        return list(dict.fromkeys(wanted))


def select(graph: Graph, config: Scope, forced: Mapping[str, str] | None = None) -> Selection:
    """Decide nodes and parameter sources; ConfigError for a bad exclude or nothing to do.

    ``forced``: node -> why it stays float, for nodes the planner keeps float from their
    ranges (joins of very different ranges, §Q13); a node's own reason comes first.
    """
    _check_exclude(graph, config)
    forced = forced or {}
    reasons = {
        node.name: _reason_not_quantized(graph, node, config) or forced.get(node.name)
        for node in graph.nodes
    }
    reasons.update(float_islands(graph))  # a function written as elementary ops (§Q12)
    _refuse_shared_constants(graph, reasons)
    _propagate_value_preserving(graph, reasons)
    keep_float_before_float(graph, reasons)  # int8 there would only round (§Q14)
    if all(reason is not None for reason in reasons.values()):
        raise ConfigError(_nothing_to_quantize(graph, config))
    fused = _fusions(graph, reasons)
    return Selection(reasons=reasons, fused=fused, sources=_sources(graph, reasons, fused))


def activation_ports(graph: Graph, node: Node, spec: OpSpec) -> tuple[int, ...]:
    """Data ports, plus the weight port when it carries an activation (MatMul of two)."""
    ports = spec.data_ports(node)
    port = spec.weight_port
    weight = None if port is None else optional_input(node, port)
    is_activation = weight is not None and weight not in graph.initializers
    if port is not None and spec.weight_may_be_activation and is_activation:
        ports = (*ports, port)
    return ports


def clamp_bounds(graph: Graph, activation: Node) -> tuple[float, float]:
    """[min, max] of a folded clamp activation (selection only folds constant bounds)."""
    spec = lookup(activation.op_type, activation.domain)
    bounds = None if spec is None else spec.clamp_bounds(activation, graph)
    if bounds is None:
        raise AssertionError(f"{activation.name!r} is not a clamp with constant bounds")
    return bounds


def _check_exclude(graph: Graph, config: Scope) -> None:
    names = [node.name for node in graph.nodes]
    known = set(names)
    for name in config.exclude:
        if name not in known:
            close = difflib.get_close_matches(name, names, n=5)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            raise ConfigError(
                f"'exclude' names {name!r}, which is not a node of the model{hint} "
                f"(the plan lists every node name)"
            )


def _reason_not_quantized(graph: Graph, node: Node, config: Scope) -> str | None:
    """Why ``node`` cannot be quantized on its own terms; None when it can."""
    spec = lookup(node.op_type, node.domain)
    if node.name in config.exclude:
        return "excluded by the configuration ('exclude')"
    if spec is None:
        kind = f"{node.domain}.{node.op_type}" if node.domain else node.op_type
        return f"{kind} has no int8 implementation in eightbit"
    if config.op_types is not None and node.op_type not in config.op_types:
        return f"op type {node.op_type} is not selected ('op_types')"
    for port in activation_ports(graph, node, spec):
        name = node.inputs[port]
        info = graph.info(name)
        if info is None:
            return f"the type of input {name!r} is unknown; normalize the model first"
        if not info.is_float:
            return f"input {name!r} is {info.dtype}, not float"
    return _weight_and_bias_reason(graph, node, spec) or spec.reason_not_quantized(node, graph)


def _weight_and_bias_reason(graph: Graph, node: Node, spec: OpSpec) -> str | None:
    for port, role in ((spec.weight_port, "weight"), (spec.bias_port, "bias")):
        if port is None:
            continue
        constant = optional_input(node, port)
        if constant is None:
            if role == "weight":
                return "has no weight input"
            continue
        if constant not in graph.initializers:
            if role == "weight" and spec.weight_may_be_activation:
                continue
            return f"{role} {constant!r} is not a constant"
        # Type and shape from the proto (a big weight is not converted to read them).
        info = graph.info(constant)
        values = graph.initializers[constant] if info is None or info.shape is None else info
        if values.dtype.kind != "f":
            return f"{role} {constant!r} is {values.dtype}, not float"
        shape = tuple(values.shape)  # type: ignore[arg-type]
        if role == "bias" and len(shape) != 1:
            return f"bias {constant!r} must be 1-D (got shape {shape})"
    return None


def _refuse_shared_constants(graph: Graph, reasons: dict[str, str | None]) -> None:
    """A weight or bias serves one quantized node: its parameters depend on that node's input."""
    owner: dict[str, str] = {}
    for node in graph.nodes:
        spec = lookup(node.op_type, node.domain)
        if reasons[node.name] is not None or spec is None:
            continue
        for port in (spec.weight_port, spec.bias_port):
            name = None if port is None else optional_input(node, port)
            if name is None or name not in graph.initializers:
                continue
            if name in owner:
                reasons[node.name] = (
                    f"its weight or bias {name!r} is already quantized for node {owner[name]!r}"
                )
                break
            owner[name] = node.name


def _propagate_value_preserving(graph: Graph, reasons: dict[str, str | None]) -> None:
    """Quantize a value-preserving op only next to a quantized node (§Q6), to a fixed point.

    A clamp (Relu, Clip) fed by a node is quantized only when that node is: after a float
    node it would share the parameters of its input, the whole pre-activation range, while
    in float its readers quantize its output with its own, narrower range.
    """
    pending = []
    for node in graph.nodes:
        spec = lookup(node.op_type, node.domain)
        if reasons[node.name] is None and spec is not None and spec.same_as_input:
            clamp = spec.clamp is not None and graph.producer(node.inputs[0]) is not None
            pending.append((node, clamp))
            reasons[node.name] = (
                "its input comes from a float node: it clamps in float and its readers "
                "quantize its output with its own range"
                if clamp
                else "its input and its readers are float (int8 would only round)"
            )
    changed = True
    while changed:
        changed = False
        for node, clamp in pending:
            if reasons[node.name] is None:
                continue
            producer = graph.producer(node.inputs[0])
            after_quantized = producer is not None and reasons[producer.name] is None
            feeds = not clamp and any(
                reasons[reader.name] is None
                for output in node.outputs
                for reader in graph.consumers(output)
            )
            if feeds or after_quantized:
                reasons[node.name] = None
                changed = True


def _fusions(graph: Graph, reasons: Mapping[str, str | None]) -> dict[str, Node]:
    """Producers whose only reader is a quantized clamp activation (§Q5)."""
    graph_outputs = {info.name for info in graph.outputs}
    fused: dict[str, Node] = {}
    for node in graph.nodes:
        spec = lookup(node.op_type, node.domain)
        if reasons[node.name] is not None or spec is None or not spec.absorbs_activation:
            continue
        produced = node.outputs[0]
        readers = graph.consumers(produced)
        if produced in graph_outputs or len(readers) != 1:
            continue
        reader = readers[0]
        reader_spec = lookup(reader.op_type, reader.domain)
        if (
            reasons[reader.name] is None
            and reader_spec is not None
            and reader_spec.clamp is not None
            and reader.inputs[0] == produced
            and list(reader.inputs).count(produced) == 1
        ):
            fused[node.name] = reader
    return fused


def _sources(
    graph: Graph, reasons: Mapping[str, str | None], fused: Mapping[str, Node]
) -> dict[str, Source]:
    sources: dict[str, Source] = {}
    for node in graph.nodes:
        spec = lookup(node.op_type, node.domain)
        if reasons[node.name] is not None or spec is None:
            continue
        ports = activation_ports(graph, node, spec)
        for port in ports:
            name = node.inputs[port]
            if name not in sources:
                sources[name] = Constant() if name in graph.initializers else Calibrated(name)
        for output in node.outputs:
            info = graph.info(output) if output else None
            if info is None or not info.is_float:
                continue
            if node.name in fused:
                activation = fused[node.name]
                bounds = clamp_bounds(graph, activation)
                sources[output] = Calibrated(activation.outputs[0], bounds)
            elif spec.same_as_input:
                sources[output] = SameAs(node.inputs[ports[0]])
            else:
                sources[output] = Calibrated(output)
    return sources


def _nothing_to_quantize(graph: Graph, config: Scope) -> str:
    present = sorted({node.op_type for node in graph.nodes})
    excluded = f"; {len(config.exclude)} node(s) excluded by 'exclude'" if config.exclude else ""
    selected = f"; 'op_types' selects {list(config.op_types)}" if config.op_types else ""
    return (
        f"no node of the model can be quantized (its op types: {', '.join(present) or 'none'}"
        f"{excluded}{selected}); eightbit quantizes {', '.join(supported_op_types())}"
    )
