"""``refine_ranges``: each activation's range chosen by the error it causes (numerics-improve §I.4).

One range method for the whole network is a compromise: a tensor whose large values carry
information wants a wide range, one whose rare outliers only cost resolution wants a tight
one. For every calibrated tensor the candidates are the ranges every method selects from
its stored histogram (no new inference); each is scored by the error it causes where it is
read: the output of each weighted reader (after its folded activation, clamped to that
output's own range, since what lies beyond is lost in quantization anyway), or the tensor
itself for other readers (§I.4.1). One pass of a probe model scores every candidate of
every tensor.

A local score is a proposal, not a verdict: the network's output may still prefer the old
range (§I.4.2 shows MobileNetV2 where it does). So the proposals, strongest local gain
first, are checked against the float network's first output on the same calibration
samples: all of them, the first half, the first quarter, ... the first one; the best of
these that raises the output SQNR is kept, else nothing changes.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from eightbit.calibrate import Ranges, TensorRange
from eightbit.calibrate.data import Batch, DataLike
from eightbit.export import to_qdq
from eightbit.graph import Graph, Node, make_session
from eightbit.improve.measure import OutputReference, count, read_samples
from eightbit.ops import lookup
from eightbit.ops.node_selection import Calibrated, select
from eightbit.plan import clip_range, make_plan
from eightbit.quant import QuantConfig, activation_params
from eightbit.steps import LayerGain, StepReport

DEFAULT_SAMPLES = 32
# The candidate methods (besides the calibrated one): (method, percentile).
CANDIDATES: tuple[tuple[str, float | None], ...] = (
    ("minmax", None),
    ("percentile", 99.9),
    ("percentile", 99.99),
    ("percentile", 99.999),
    ("mse", None),
    ("entropy", None),
)


@dataclass(frozen=True)
class Proposal:
    """Tensor ``tensor`` would take ``candidate`` (local SQNR ``before_db`` -> ``after_db``)."""

    tensor: str
    candidate: str
    low: float
    high: float
    before_db: float
    after_db: float


def refine_ranges(
    model: onnx.ModelProto,
    ranges: Ranges,
    data: DataLike,
    config: QuantConfig | None = None,
    *,
    samples: int = DEFAULT_SAMPLES,
    threads: int | None = None,
) -> tuple[Ranges, StepReport]:
    """``ranges`` with some tensors' ranges replaced, and what the step measured.

    ``model`` is the normalized float model ``ranges`` were calibrated on; ``data`` its
    calibration samples (the first ``samples`` are read). Needs the histograms of the
    calibration (any histogram method); returns ``ranges`` unchanged otherwise.
    """
    started = time.perf_counter()
    config = config or QuantConfig()
    graph = Graph(model)
    names = [name for name in ranges if ranges.histogram(name) is not None]
    if not names:
        note = "skipped: the ranges have no histograms (calibrate with a histogram method)"
        return ranges, StepReport(
            "refine_ranges", time.perf_counter() - started, None, None, notes=(note,)
        )
    candidates = candidate_ranges(ranges, names)
    batches = read_samples(data, graph, samples)
    proposals = propose(model, graph, ranges, candidates, config, batches, threads)
    reference = OutputReference(model, batches, threads)

    def score(changes: Sequence[Proposal]) -> float:
        return reference.sqnr(to_qdq(model, make_plan(graph, _with(ranges, changes), config)))

    before = score(())
    kept: list[Proposal] = []
    current = before
    # The strongest proposals first: all of them, then the first half, quarter, ... one.
    size = len(proposals)
    while size >= 1:
        trial = score(proposals[:size])
        if trial > current:
            kept, current = list(proposals[:size]), trial
        size //= 2
    notes = [
        f"{len(proposals)} tensor(s) of {len(names)} proposed a different range on "
        f"{count(batches)} calibration samples; {len(kept)} kept",
        f"output SQNR {before:.2f} -> {current:.2f} dB on calibration samples",
    ]
    if kept:
        chosen: dict[str, int] = {}
        for proposal in kept:
            chosen[proposal.candidate] = chosen.get(proposal.candidate, 0) + 1
        notes.append("kept: " + ", ".join(f"{n} {c}" for c, n in sorted(chosen.items())))
    report = StepReport(
        name="refine_ranges",
        seconds=time.perf_counter() - started,
        before_db=before,
        after_db=current,
        layers=tuple(LayerGain(p.tensor, p.before_db, p.after_db) for p in kept),
        notes=tuple(notes),
    )
    return _with(ranges, kept), report


def candidate_ranges(
    ranges: Ranges, names: Sequence[str]
) -> dict[str, dict[str, tuple[float, float]]]:
    """Per tensor: candidate label -> (low, high), the calibrated range labelled "calibrated"."""
    result: dict[str, dict[str, tuple[float, float]]] = {
        name: {"calibrated": (ranges[name].min, ranges[name].max)} for name in names
    }
    for method, percentile in CANDIDATES:
        label = method if percentile is None else f"{method} {percentile:g}"
        reselected = ranges.reselect(method, percentile=percentile)
        for name in names:
            entry = reselected[name]
            if (entry.min, entry.max) not in result[name].values():
                result[name][label] = (entry.min, entry.max)
    return result


def propose(
    model: onnx.ModelProto,
    graph: Graph,
    ranges: Ranges,
    candidates: Mapping[str, Mapping[str, tuple[float, float]]],
    config: QuantConfig,
    batches: Sequence[Batch],
    threads: int | None,
) -> list[Proposal]:
    """The tensors whose best-scoring candidate is not the calibrated range, best gain first."""
    selection = select(graph, config)
    bounds: dict[str, tuple[float, float] | None] = {}
    for source in selection.sources.values():
        if isinstance(source, Calibrated):
            bounds.setdefault(source.tensor, source.bounds)
    folded = {producer: activation.name for producer, activation in selection.fused.items()}
    probe = _Probe(model, graph, ranges, bounds, folded)
    for tensor, options in candidates.items():
        if tensor in bounds:
            probe.add(tensor, options, config)
    if not probe.outputs:
        return []
    sums = probe.run(batches, threads)
    proposals = []
    for tensor, options in probe.options.items():
        scores = {label: probe.nsr(tensor, label, sums) for label in options}
        best = min(scores, key=lambda label: scores[label])
        if best != "calibrated" and scores[best] < scores["calibrated"]:
            low, high = options[best]
            proposals.append(
                Proposal(tensor, best, low, high, _db(scores["calibrated"]), _db(scores[best]))
            )
    return sorted(proposals, key=lambda p: p.before_db - p.after_db)


class _Probe:
    """The float model plus, per tensor and candidate, a quantized copy of what reads it."""

    def __init__(
        self,
        model: onnx.ModelProto,
        graph: Graph,
        ranges: Ranges,
        bounds: Mapping[str, tuple[float, float] | None],
        folded: Mapping[str, str],
    ) -> None:
        """``bounds``: the clamp of each calibrated tensor; ``folded``: producer -> the
        activation folded into it."""
        self.model, self.graph, self.ranges, self.bounds = model, graph, ranges, bounds
        self.folded = folded
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.outputs: list[str] = []
        self.options: dict[str, Mapping[str, tuple[float, float]]] = {}
        self.readers: dict[str, list[str]] = {}  # tensor -> reader keys
        self.protos = {node.name: node for node in model.graph.node}
        self.count = 0

    def add(
        self, tensor: str, options: Mapping[str, tuple[float, float]], config: QuantConfig
    ) -> None:
        readers = [
            r for r in self.graph.consumers(tensor) if _is_layer(r) and r.inputs[0] == tensor
        ]
        others = len(readers) < len(self.graph.consumers(tensor)) or not readers
        keys = [reader.name for reader in readers] + (["itself"] if others else [])
        references = {key: self._reference(tensor, key) for key in keys}
        for label, (low, high) in options.items():
            params = activation_params(*clip_range((low, high), self.bounds[tensor]), config)
            scale, zero = (
                self._constant(params.scale),
                self._constant(params.zero_point.astype(params.numpy_dtype)),
            )
            stored = self._node("QuantizeLinear", [tensor, scale, zero])
            restored = self._node("DequantizeLinear", [stored, scale, zero])
            for key in keys:
                value = (
                    restored if key == "itself" else self._reader(self.graph.node(key), restored)
                )
                difference = self._node("Sub", [self._clamped(tensor, key, value), references[key]])
                self._output(
                    f"{tensor}|{key}|{label}|noise",
                    self._node("ReduceSumSquare", [difference], keepdims=0),
                )
        for key in keys:
            self._output(
                f"{tensor}|{key}|signal",
                self._node("ReduceSumSquare", [references[key]], keepdims=0),
            )
        self.options[tensor] = options
        self.readers[tensor] = keys

    def run(self, batches: Sequence[Batch], threads: int | None) -> dict[str, float]:
        graph = helper.make_graph(
            [*self.model.graph.node, *self.nodes],
            "refine",
            list(self.model.graph.input),
            [helper.make_empty_tensor_value_info(name) for name in self._names],
            [*self.model.graph.initializer, *self.initializers],
        )
        probe = helper.make_model(
            graph, opset_imports=list(self.model.opset_import), ir_version=self.model.ir_version
        )
        session = make_session(probe, threads=threads, lean=True)
        sums = dict.fromkeys(self.outputs, 0.0)
        for batch in batches:
            for label, value in zip(self.outputs, session.run(self._names, batch), strict=True):
                sums[label] += float(value)
        return sums

    def nsr(self, tensor: str, label: str, sums: Mapping[str, float]) -> float:
        """Σ over readers of noise / signal (relative squared error)."""
        total = 0.0
        for key in self.readers[tensor]:
            signal = sums[f"{tensor}|{key}|signal"]
            noise = sums[f"{tensor}|{key}|{label}|noise"]
            total += noise / signal if signal > 0 else (0.0 if noise == 0 else np.inf)
        return total

    # -- building ----------------------------------------------------------------------

    @property
    def _names(self) -> list[str]:
        return [f"__refine_out_{i}" for i in range(len(self.outputs))]

    def _output(self, label: str, tensor: str) -> None:
        self.nodes.append(
            helper.make_node("Identity", [tensor], [f"__refine_out_{len(self.outputs)}"])
        )
        self.outputs.append(label)

    def _fresh(self) -> str:
        self.count += 1
        return f"__refine_{self.count}"

    def _node(self, op_type: str, inputs: list[str], **attributes: Any) -> str:
        output = self._fresh()
        node = helper.make_node(op_type, inputs, [output], name=self._fresh(), **attributes)
        self.nodes.append(node)
        return output

    def _constant(self, value: np.ndarray) -> str:
        name = self._fresh()
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def _reader(self, reader: Node, value: str) -> str:
        """A copy of ``reader`` (and of its folded activation) reading ``value``."""
        output = self._copy(reader, value)
        activation = self.folded.get(reader.name)
        return output if activation is None else self._copy(self.graph.node(activation), output)

    def _copy(self, node: Node, value: str) -> str:
        output = self._fresh()
        proto = onnx.NodeProto()
        proto.CopyFrom(self.protos[node.name])
        proto.name = self._fresh()
        proto.input[0] = value
        del proto.output[:]
        proto.output.append(output)
        self.nodes.append(proto)
        return output

    def _reference(self, tensor: str, key: str) -> str:
        if key == "itself":
            return tensor
        written = self._written(key)
        return self._clamped(tensor, key, written)

    def _written(self, reader: str) -> str:
        activation = self.folded.get(reader)
        return self.graph.node(activation if activation is not None else reader).outputs[0]

    def _clamped(self, tensor: str, key: str, value: str) -> str:
        """``value`` within the range its tensor is quantized to (§I.4.1)."""
        if key == "itself":
            return value
        written = self._written(key)
        if written not in self.ranges:
            return value
        entry = self.ranges[written]
        low, high = clip_range((entry.min, entry.max), self.bounds.get(written))
        low, high = min(low, 0.0), max(high, 0.0)
        return self._node(
            "Clip",
            [
                value,
                self._constant(np.asarray(low, np.float32)),
                self._constant(np.asarray(high, np.float32)),
            ],
        )


def _with(ranges: Ranges, changes: Sequence[Proposal]) -> Ranges:
    """``ranges`` with the changed tensors' selected ranges replaced (extremes kept)."""
    if not changes:
        return ranges
    tensors = dict(ranges.tensors)
    for change in changes:
        old = tensors[change.tensor]
        tensors[change.tensor] = TensorRange(
            change.low, change.high, old.observed_min, old.observed_max
        )
    histograms = {name: h for name in ranges if (h := ranges.histogram(name)) is not None}
    return Ranges(
        ranges.method,
        tensors,
        ranges.samples,
        skipped=ranges.skipped,
        histograms=histograms,
        options=ranges.options,
    )


def _db(nsr: float) -> float:
    return float("inf") if nsr <= 0 else float(-10.0 * np.log10(nsr))


def _is_layer(node: Node) -> bool:
    """A weighted reader (Conv, ConvTranspose, Gemm, MatMul): scored at its output (§I.4.1)."""
    spec = lookup(node.op_type, node.domain)
    return spec is not None and spec.is_layer
