"""``QuantPlan``: for every node, int8 or float (and why); for every tensor, its parameters.

``make_plan`` decides from a normalized graph, calibrated ranges and a ``QuantConfig``:
which nodes are quantized (docs/numerics.md §Q6, §Q9), which Relu/Clip nodes are folded into
their producer (§Q5), and the parameters of every activation, weight, bias and constant
operand (§Q1-§Q4, §Q8). ``activation_tensors_to_calibrate`` names the tensors whose ranges
calibration must observe, and no more. ``rebias`` derives the weight and bias parameters
again after a step changed the constants (bias correction). The plan also records the
improvement steps that ran (``steps``, docs/numerics.md). The plan is a plain
value: JSON in, JSON out.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol

import numpy as np
import onnx

from eightbit._io import atomic_write_text
from eightbit._memo import ConstantsMemo
from eightbit.errors import ConfigError, DataError
from eightbit.graph import Graph, Node
from eightbit.ops import OpSpec, PerTensor, lookup
from eightbit.ops.joins import float_joins
from eightbit.ops.max_readers import max_read_tensors
from eightbit.ops.node_selection import Calibrated, SameAs, Source, clamp_bounds, select
from eightbit.ops.saturating_readers import reader_windows
from eightbit.ops.spec import optional_input
from eightbit.quant import (
    QuantConfig,
    QuantParams,
    activation_params,
    bias_params,
    constant_params,
    fit_weight_to_bias,
    int16_params,
    quantize_values,
    weight_params,
)
from eightbit.quant.targets import refuse_float_nodes
from eightbit.serialize import check_fields, field_names, from_dict, to_dict
from eightbit.steps import StepReport

PLAN_FORMAT = "eightbit-plan"
# Version 2 added "steps"; version 1 plans (no steps) still load.
PLAN_VERSION = 2
READABLE_VERSIONS = (1, 2)


def plan_path_for(model_path: str | os.PathLike[str]) -> Path:
    """Where the plan of a quantized model file lives: ``<stem>.plan.json`` beside it."""
    path = Path(model_path)
    return path.with_name(f"{path.stem}.plan.json")


@dataclass(frozen=True)
class NodeDecision:
    """What happens to one node.

    ``reason``: for a float node, why it is not quantized; for a quantized node, any
    departure from the configuration (per-tensor weights, widened weight scales), else None.
    ``fused_activation``: the Relu/Clip folded into this node's output (dropped from the
    graph). ``fused_into``: for that folded activation, the node it was folded into.
    """

    name: str
    op_type: str
    quantized: bool
    reason: str | None = None
    fused_activation: str | None = None
    fused_into: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NodeDecision:
        data = check_fields("a plan node", data, field_names(cls))
        for required, kind in (("name", str), ("op_type", str), ("quantized", bool)):
            if not isinstance(data.get(required), kind):
                raise ConfigError(
                    f"a plan node's {required!r} must be a {kind.__name__} "
                    f"(got {data.get(required)!r})"
                )
        for optional in ("reason", "fused_activation", "fused_into"):
            if not isinstance(data.get(optional), str | None):
                raise ConfigError(
                    f"a plan node's {optional!r} must be a string or null "
                    f"(got {data.get(optional)!r})"
                )
        return from_dict(cls, "a plan node", data)


@dataclass(frozen=True)
class QuantPlan:
    """The decisions of ``make_plan``: a configuration, node decisions, tensor parameters.

    ``steps``: the improvement steps that ran before the plan was final, in order, each
    with its time and what it gained (``eightbit.improve``).
    """

    config: QuantConfig
    tensors: Mapping[str, QuantParams]
    nodes: tuple[NodeDecision, ...] = field(default=())
    steps: tuple[StepReport, ...] = field(default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "tensors", MappingProxyType(dict(self.tensors)))
        object.__setattr__(self, "nodes", tuple(self.nodes))
        object.__setattr__(self, "steps", tuple(self.steps))
        seen: set[str] = set()
        for decision in self.nodes:
            if decision.name in seen:
                raise ConfigError(f"a plan lists node {decision.name!r} twice")
            seen.add(decision.name)

    def quantized_nodes(self) -> tuple[NodeDecision, ...]:
        return tuple(d for d in self.nodes if d.quantized)

    def fallbacks(self) -> tuple[NodeDecision, ...]:
        """Nodes kept in float, each with its reason."""
        return tuple(d for d in self.nodes if not d.quantized)

    def decision(self, name: str) -> NodeDecision:
        for candidate in self.nodes:
            if candidate.name == name:
                return candidate
        raise ConfigError(f"the plan has no node named {name!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": PLAN_FORMAT,
            "version": PLAN_VERSION,
            "config": self.config.to_dict(),
            "nodes": [decision.to_dict() for decision in self.nodes],
            "tensors": {name: params.to_dict() for name, params in self.tensors.items()},
            "steps": [step.to_dict() for step in self.steps],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QuantPlan:
        if not isinstance(data, Mapping) or data.get("format") != PLAN_FORMAT:
            raise ConfigError(f"not an eightbit plan: 'format' must be {PLAN_FORMAT!r}")
        version = data.get("version")
        if isinstance(version, bool) or version not in READABLE_VERSIONS:
            raise ConfigError(
                f"plan 'version' must be {' or '.join(map(str, READABLE_VERSIONS))} "
                f"(got {version!r}); "
                f"make the plan again with this eightbit"
            )
        steps = data.get("steps", []) if version >= 2 else []
        if not isinstance(steps, list):
            raise ConfigError(f"a plan's 'steps' must be a list (got {steps!r})")
        return cls(
            config=QuantConfig.from_dict(data.get("config", {})),
            tensors={
                name: QuantParams.from_dict(params)
                for name, params in dict(data.get("tensors", {})).items()
            },
            nodes=tuple(NodeDecision.from_dict(node) for node in data.get("nodes", [])),
            steps=tuple(StepReport.from_dict(step) for step in steps),
        )

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the plan as JSON, atomically."""
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> QuantPlan:
        source = Path(path)
        try:
            text = source.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read plan {str(source)!r}: {exc.strerror}") from exc
        except UnicodeDecodeError:
            raise ConfigError(
                f"plan {str(source)!r} is not a text file (not UTF-8); give the .plan.json "
                "that eightbit quantize wrote beside the model"
            ) from None
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise ConfigError(f"plan {str(source)!r} is not valid JSON: {exc}") from None
        return cls.from_dict(data)


class PlannedModel(Protocol):
    """A QDQ model and its plan: what ``quantize`` returns, what a fallback's ``build``
    makes, what the engine runs (``eightbit.engine.execution``)."""

    @property
    def model(self) -> onnx.ModelProto: ...

    @property
    def plan(self) -> QuantPlan: ...


# --- Planning ---------------------------------------------------------------------------


class RangeLookup(Protocol):
    """``Ranges`` from eightbit.calibrate, or a plain mapping name -> (min, max)."""

    def __getitem__(self, name: str, /) -> Any: ...


def activation_tensors_to_calibrate(graph: Graph, config: QuantConfig) -> list[str]:
    """The tensors whose ranges ``make_plan`` reads, in topological order.

    Outputs that keep their input's parameters are not listed, and a folded producer's
    output is replaced by its activation's output (§Q5): calibration observes no more
    than the plan needs. Raises the same ConfigErrors as ``make_plan``.
    """
    return select(graph, config).calibrated_tensors()


def make_plan(
    graph: Graph,
    ranges: RangeLookup,
    config: QuantConfig,
    *,
    separate_joins: bool = False,
    weights: WeightParamsCache | None = None,
) -> QuantPlan:
    """Decide every node and the parameters of every quantized tensor.

    ``ranges`` maps each tensor of ``activation_tensors_to_calibrate`` to its (min, max),
    as ``Ranges`` from eightbit.calibrate or a plain mapping of pairs. ``separate_joins``:
    keep float a Concat/Add/Sub after the last heavy op whose inputs' ranges differ by more
    than ``JOIN_RATIO``, and the nodes after it (§Q13), and likewise a probability op there
    (§Q13.1), each node with its reason. Raises
    ConfigError for an unknown name in ``config.exclude`` or a model with nothing to
    quantize, and DataError for a missing range. A target without float kernels (``mcu``)
    skips the join rule and refuses a plan that keeps any node in float, naming each node.
    ``weights``: the weight and bias parameters of earlier plans (a fallback's rebuilds),
    reused where a node's constants and input parameters recur; the plan is the same.
    """
    selection = select(graph, config)
    if separate_joins and config.profile.float_nodes:
        forced = float_joins(
            graph,
            selection.reasons,
            selection.sources,
            lambda name, bounds: clip_range(_range_of(ranges, name), bounds),
            lambda name: _constant_range(graph, name),
        )
        if forced:
            selection = select(graph, config, forced)
    _check_int16_names(config, selection.sources)
    tensors: dict[str, QuantParams] = {}
    max_read = max_read_tensors(graph)  # their top is not clipped (§Q15)
    windows = reader_windows(graph)  # readers flat outside a window need no more (§Q18)
    for name, source in selection.sources.items():
        if isinstance(source, Calibrated):
            found = _range_of(ranges, source.tensor, keep_max=source.tensor in max_read)
            lo, hi = clip_range(clip_range(found, source.bounds), windows.get(source.tensor))
            wide = name in config.int16 or source.tensor in config.int16  # §Q17
            tensors[name] = (int16_params if wide else activation_params)(lo, hi, config)
        elif isinstance(source, SameAs):
            tensors[name] = tensors[source.tensor]
        else:
            tensors[name] = constant_params(graph.initializers[name], config)

    notes: dict[str, str | None] = {}
    for node in graph.nodes:
        spec = lookup(node.op_type, node.domain)
        if selection.reasons[node.name] is None and spec is not None:
            notes[node.name] = _weight_and_bias_params(graph, node, spec, config, tensors, weights)

    folded: dict[str, str] = {}  # dropped activation -> the producer it was folded into
    for producer_name, activation in selection.fused.items():
        produced = graph.node(producer_name).outputs[0]
        if _saturation_is_clamp(tensors[produced], clamp_bounds(graph, activation)):
            del tensors[produced]  # the producer writes straight into the activation's Q/DQ
            folded[activation.name] = producer_name

    if config.profile.activation_reads_float:
        for producer_name, activation in selection.fused.items():
            if activation.name not in folded:  # kept: it reads the layer's float output
                tensors.pop(graph.node(producer_name).outputs[0], None)
    fused_activation = {producer: activation for activation, producer in folded.items()}
    decisions = tuple(
        NodeDecision(
            name=node.name,
            op_type=node.op_type,
            quantized=selection.reasons[node.name] is None,
            reason=selection.reasons[node.name] or notes.get(node.name),
            fused_activation=fused_activation.get(node.name),
            fused_into=folded.get(node.name),
        )
        for node in graph.nodes
    )
    refuse_float_nodes(config.target, {d.name: d.reason for d in decisions if not d.quantized})
    return QuantPlan(config=config, tensors=tensors, nodes=decisions)


def rebias(graph: Graph, plan: QuantPlan) -> QuantPlan:
    """``plan`` with weight and bias parameters derived again from ``graph``'s constants.

    For a model whose weights or biases a step changed after planning (bias correction
    adds and changes biases): activation parameters, fusions and steps are kept, so no
    calibration is needed; the result equals ``make_plan`` on the same ranges.
    """
    tensors = dict(plan.tensors)
    notes: dict[str, str | None] = {}
    for decision in plan.quantized_nodes():
        if decision.fused_into is not None:
            continue
        node = graph.node(decision.name)
        spec = lookup(node.op_type, node.domain)
        if spec is not None:
            notes[node.name] = _weight_and_bias_params(graph, node, spec, plan.config, tensors)
    nodes = tuple(
        replace(decision, reason=notes[decision.name]) if decision.name in notes else decision
        for decision in plan.nodes
    )
    return replace(plan, tensors=tensors, nodes=nodes)


def _weight_and_bias_params(
    graph: Graph,
    node: Node,
    spec: OpSpec,
    config: QuantConfig,
    tensors: dict[str, QuantParams],
    cache: WeightParamsCache | None = None,
) -> str | None:
    """Add the node's weight and bias parameters to ``tensors``; return a note, if any.
    ``cache``: what earlier plans computed for the same constants and input parameters."""
    weight = None if spec.weight_port is None else optional_input(node, spec.weight_port)
    if weight is None or weight not in graph.initializers:
        return None  # no weight, or MatMul's second activation
    values = graph.initializers[weight]
    notes = []
    axis: int | None = None
    if config.per_channel and spec.weight_channel_axis is not None:
        found = spec.weight_channel_axis(node, tuple(values.shape))
        if isinstance(found, PerTensor):
            notes.append(f"per-tensor weights: {found.reason}")
        else:
            axis = found
    bias = None if spec.bias_port is None else optional_input(node, spec.bias_port)
    input_params = None if bias is None else tensors[node.inputs[spec.data_ports(node)[0]]]
    bias_values = None if bias is None else graph.initializers[bias]

    def compute() -> tuple[QuantParams, QuantParams | None, str | None]:
        params = weight_params(values, axis, config, name=f"weight {weight!r}")
        if bias_values is None or input_params is None:
            return params, None, None
        params, widened = fit_weight_to_bias(bias_values, input_params, params)
        note = f"weight scale widened on channel(s) {list(widened)} so the bias fits"
        return params, bias_params(input_params, params), note if widened else None

    if cache is None:
        params, bias_q, widened_note = compute()
    else:
        # Without ``exclude``: a fallback's rebuilds differ in it (one excluded set each),
        # and no weight or bias parameter reads it (eq. Q.5-Q.7).
        key = (weight, bias, axis, replace(config, exclude=()), _params_key(input_params))
        params, bias_q, widened_note = cache.get(key, (values, bias_values), compute)
    if bias is not None and bias_q is not None:
        tensors[bias] = bias_q
    if widened_note is not None:
        notes.append(widened_note)
    tensors[weight] = params
    return "; ".join(notes) or None


def _params_key(params: QuantParams | None) -> tuple[object, ...] | None:
    """What of ``params`` the weight and bias parameters depend on, as a dictionary key."""
    if params is None:
        return None
    return (params.dtype, params.axis, params.scale.tobytes(), params.zero_point.tobytes())


class WeightParamsCache(ConstantsMemo[Any]):
    """Weight and bias parameters ``make_plan`` chose, with the constants they came from.

    A fallback plans the model once per rebuild (§R.10) and most weighted nodes keep their
    weights, biases and input parameters from one rebuild to the next; the parameters are
    a function of those (eq. Q.5-Q.7), so an entry is reused only when the weights' and
    biases' bytes are equal (``ConstantsMemo``) and the key (names, axis, the config but for
    its excluded nodes, input parameters) is the same. At most ``max_bytes`` of constants
    are kept (the first met): a big model's weights are not held twice.
    """

    def __init__(self, max_bytes: int = 64 << 20) -> None:
        super().__init__(max_bytes)

    def get(self, key: tuple[object, ...], constants: tuple[Any, ...], compute: Any) -> Any:
        """``compute()``, or what it returned for ``key`` and the same ``constants``."""
        data = tuple(b"" if c is None else _described(c) for c in constants)
        return self.cached(key, data, compute, lambda _: sum(len(part) for part in data))


def _described(values: Any) -> bytes:
    """An array's type, shape and bytes: equal only for the same array."""
    array = np.asarray(values)
    return f"{array.dtype.str}{array.shape}".encode() + array.tobytes()


def _range_of(ranges: RangeLookup, name: str, keep_max: bool = False) -> tuple[float, float]:
    """The selected range; with ``keep_max``, up to the observed maximum (§Q15)."""
    try:
        entry = ranges[name]
    except KeyError:
        raise DataError(
            f"no calibrated range for tensor {name!r}; calibrate the tensors listed by "
            f"activation_tensors_to_calibrate(graph, config) with this configuration"
        ) from None
    lo, hi = entry if isinstance(entry, tuple | list) else (entry.min, entry.max)
    if keep_max and not isinstance(entry, tuple | list):
        hi = max(hi, entry.observed_max)
    return float(lo), float(hi)


def _constant_range(graph: Graph, name: str) -> tuple[float, float]:
    values = graph.initializers[name]
    if values.size == 0:
        return 0.0, 0.0
    return float(values.min()), float(values.max())


def clip_range(
    calibrated: tuple[float, float], clamp: tuple[float, float] | None
) -> tuple[float, float]:
    """A calibrated range within a folded activation's clamp (the range its params get)."""
    lo, hi = calibrated
    if clamp is None:
        return lo, hi
    lo, hi = max(lo, clamp[0]), min(hi, clamp[1])
    return lo, max(lo, hi)  # a range entirely outside the clamp collapses onto its edge


def _check_int16_names(config: QuantConfig, sources: Mapping[str, Source]) -> None:
    """Every tensor named in ``config.int16`` must be a calibrated activation of the plan."""
    calibrated = [(name, s) for name, s in sources.items() if isinstance(s, Calibrated)]
    # A layer folded with its activation is calibrated on the activation's output (§Q5).
    activations = [name for name, _ in calibrated]
    names = set(activations) | {source.tensor for _, source in calibrated}
    unknown = [name for name in config.int16 if name not in names]
    if unknown:
        raise ConfigError(
            f"'int16' names {unknown}, which the plan does not quantize as activations; "
            f"name quantized activation tensors, e.g. {activations[:3]}"
        )


def _saturation_is_clamp(params: QuantParams, bounds: tuple[float, float]) -> bool:
    """Eq. Q.9: Q(min) = qmin and Q(max) = qmax, so quantizing does the clamp by itself."""
    low, high = bounds
    low_ok = low == -math.inf or int(quantize_values(low, params)) == params.qmin
    high_ok = high == math.inf or int(quantize_values(high, params)) == params.qmax
    return low_ok and high_ok
