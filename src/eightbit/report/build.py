"""``build_report``: run the analysis and join its results into ``ReportData``."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from eightbit import __version__
from eightbit.analysis import (
    ModelPair,
    RunOptions,
    TensorReport,
    ValidationResult,
    load_pair,
    validate_pair,
)
from eightbit.analysis.labels import LabelsLike
from eightbit.analysis.models import DataLike, ModelLike, PlanLike
from eightbit.analysis.qdq import node_label
from eightbit.analysis.validate import IN_PROCESS, Passes
from eightbit.errors import ConfigError
from eightbit.plan import QuantPlan
from eightbit.qdq import QDQ_OPS, is_dequantize, is_quantize
from eightbit.quant import QuantParams
from eightbit.report.model import (
    Decision,
    HistogramData,
    LayerRow,
    ReportData,
    Summary,
    WhatIfRow,
)

DEFAULT_LATENCY_RUNS = 20


def build_report(
    float_model: ModelLike,
    int8_model: ModelLike,
    data: DataLike,
    *,
    labels: LabelsLike | None = None,
    plan: PlanLike | None = None,
    title: str | None = None,
    what_if: int = 3,
    latency_runs: int = DEFAULT_LATENCY_RUNS,
    options: RunOptions = RunOptions(),  # noqa: B008 (frozen, so sharing is safe)
    passes: Passes = IN_PROCESS,
) -> ReportData:
    """Validate ``int8_model`` against ``float_model`` on ``data`` and gather the report;
    ``passes``: where the passes over the data run (``eightbit.distributed``)."""
    pair = load_pair(float_model, int8_model, plan=plan)
    result = validate_pair(
        pair, data, labels=labels, what_if=what_if, latency_runs=latency_runs, options=options,
        passes=passes,
    )  # fmt: skip
    return report_data(pair, result, title=title)


def report_data(
    pair: ModelPair, result: ValidationResult, *, title: str | None = None
) -> ReportData:
    """Join a validation result with the models and the plan into ``ReportData``."""
    if result.layers is None:
        raise ConfigError("a report needs the per-layer analysis; validate with layers=True")
    ranks = {report.name: i for i, report in enumerate(result.layers.ranked(), start=1)}
    layers = _layer_rows(pair, result, ranks)
    float_name = pair.float_path.name if pair.float_path else "float model (in memory)"
    int8_name = pair.int8_path.name if pair.int8_path else "int8 model (in memory)"
    memory = result.memory
    summary = Summary(
        title=title or f"eightbit report: {int8_name}",
        float_model=float_name,
        int8_model=int8_name,
        samples=result.samples,
        float_param_bytes=memory.float_bytes,
        int8_param_bytes=memory.int8_bytes,
        saved_percent=memory.saved_percent,
        float_file_bytes=memory.float_file_bytes,
        int8_file_bytes=memory.int8_file_bytes,
        latency=result.latency,
        outputs=result.outputs,
        quantized_tensors=len(result.layers.activations) + len(result.layers.weights),
        float_nodes=sum(row.status == "float" for row in layers),
        has_plan=pair.plan is not None,
        version=__version__,
    )
    reports = (*result.layers.activations, *result.layers.weights)
    return ReportData(
        summary=summary,
        layers=layers,
        histograms=tuple(_histogram(report, ranks.get(report.name)) for report in reports),
        decisions=_decisions(pair),
        what_if=_what_if_rows(result),
        notes=_notes(pair, result),
        findings=result.findings(),
    )


def _layer_rows(
    pair: ModelPair, result: ValidationResult, ranks: Mapping[str, int]
) -> tuple[LayerRow, ...]:
    assert result.layers is not None
    by_producer: dict[str | None, TensorReport] = {}
    for report in result.layers.activations:
        by_producer.setdefault(report.node, report)
    weight_sqnr: dict[str, float] = {}
    for report in result.layers.weights:
        if report.node is not None and report.sqnr_own_db is not None:
            weight_sqnr[report.node] = min(
                weight_sqnr.get(report.node, math.inf), report.sqnr_own_db
            )
    memory = {layer.node: layer for layer in result.memory.layers}
    decisions = {d.name: d for d in pair.plan.nodes} if pair.plan else {}
    planned = pair.plan.tensors if pair.plan else {}
    rows: list[LayerRow] = []
    for activation in result.layers.activations:
        if activation.node is None:  # a quantized graph input: no node computes it
            name = f"(input) {activation.name}"
            rows.append(
                _row(len(rows), name, "input", "input", None, activation, ranks, None, 0, 0)
            )
    for index, node in enumerate(pair.int8_graph.nodes):
        if node.op_type in QDQ_OPS:
            continue
        label = node_label(node, index)
        output = by_producer.get(label)
        decision = decisions.get(label)
        if decision is not None:
            status = "int8" if decision.quantized else "float"
        else:
            status = "int8" if output is not None else "float"
        layer_memory = memory.get(label)
        stored = None
        if output is None and status == "int8":
            stored = _stored_format(pair, node.outputs, planned)
        rows.append(
            _row(
                len(rows),
                label,
                node.op_type,
                status,
                None if decision is None else decision.reason,
                output,
                ranks,
                weight_sqnr.get(label),
                0 if layer_memory is None else layer_memory.float_bytes,
                0 if layer_memory is None else layer_memory.int8_bytes,
                stored,
            )
        )
    return tuple(rows)


def _stored_format(
    pair: ModelPair, outputs: Sequence[str], planned: Mapping[str, QuantParams]
) -> QuantParams | None:
    """The plan's format of a node output the analysis could not read (a 16-bit one, whose
    QuantizeLinear the notes list): the row still says how it is stored. The writer names
    the producer's output ``<tensor>_prequant`` and the DequantizeLinear's ``<tensor>``."""
    graph = pair.int8_graph
    for quantize in (n for n in graph.consumers(outputs[0]) if is_quantize(n)) if outputs else ():
        for reader in graph.consumers(quantize.outputs[0]):
            if is_dequantize(reader) and reader.outputs[0] in planned:
                return planned[reader.outputs[0]]
    return None


def _row(
    index: int,
    node: str,
    op_type: str,
    status: str,
    reason: str | None,
    report: TensorReport | None,
    ranks: Mapping[str, int],
    weight_sqnr: float | None,
    float_bytes: int,
    int8_bytes: int,
    stored: QuantParams | None = None,
) -> LayerRow:
    params = stored if report is None else report.params
    return LayerRow(
        index=index,
        node=node,
        op_type=op_type,
        status=status,
        reason=reason,
        tensor=None if report is None else report.name,
        dtype=None if params is None else params.dtype,
        scale=None if params is None or params.per_channel else float(params.scale),
        zero_point=None if params is None or params.per_channel else int(params.zero_point),
        sqnr_own_db=None if report is None else report.sqnr_own_db,
        sqnr_accumulated_db=None if report is None else report.sqnr_accumulated_db,
        weight_sqnr_db=weight_sqnr,
        overflow_percent=None if report is None else 100.0 * report.range.overflow_fraction,
        underflow_percent=None if report is None else 100.0 * report.range.underflow_fraction,
        float_bytes=float_bytes,
        int8_bytes=int8_bytes,
        worst_rank=None if report is None else ranks.get(report.name),
    )


def _histogram(report: TensorReport, rank: int | None) -> HistogramData:
    dynamic = report.range
    window = dynamic.window
    return HistogramData(
        tensor=report.name,
        kind=report.kind,
        node=report.node,
        dtype=report.params.dtype,
        per_channel=report.params.per_channel,
        first_bin=dynamic.histogram.first_bin,
        counts=tuple(int(count) for count in dynamic.histogram.counts),
        zeros=dynamic.histogram.zeros,
        total=dynamic.total,
        low_bit=window.low_bit,
        positive_bit=_log2_or_none(window.largest_positive),
        negative_bit=_log2_or_none(window.largest_negative),
        overflow_percent=100.0 * dynamic.overflow_fraction,
        underflow_percent=100.0 * dynamic.underflow_fraction,
        minimum=dynamic.minimum,
        maximum=dynamic.maximum,
        worst_rank=rank,
    )


def _log2_or_none(value: float) -> float | None:
    return math.log2(value) if value > 0 else None


def _decisions(pair: ModelPair) -> tuple[Decision, ...]:
    if pair.plan is None:
        return ()
    return tuple(
        Decision(d.name, d.op_type, d.quantized, d.reason, d.fused_into, d.fused_activation)
        for d in pair.plan.nodes
    )


def _what_if_rows(result: ValidationResult) -> tuple[WhatIfRow, ...]:
    assert result.layers is not None
    own = {report.name: report.sqnr_own_db for report in result.layers.activations}
    baseline = result.outputs[0]
    return tuple(
        WhatIfRow(
            tensor=entry.tensor,
            node=entry.node,
            own_sqnr_db=own.get(entry.tensor),
            only_quantized_sqnr_db=entry.only_quantized[0].sqnr_db,
            only_quantized_agreement=entry.only_quantized[0].top1_agreement,
            kept_float_sqnr_db=entry.kept_float[0].sqnr_db,
            kept_float_agreement=entry.kept_float[0].top1_agreement,
            int8_sqnr_db=baseline.sqnr_db,
            int8_agreement=baseline.top1_agreement,
        )
        for entry in result.layers.what_if
    )


def _notes(pair: ModelPair, result: ValidationResult) -> tuple[str, ...]:
    notes = [finding.line() for finding in result.findings()]
    if pair.plan is None:
        notes.append(
            "No plan beside the int8 model: fallback reasons and decisions are not shown "
            "(eightbit writes <model>.plan.json)."
        )
    assert result.layers is not None
    if result.layers.unmatched:
        shown = ", ".join(result.layers.unmatched[:10])
        notes.append(
            f"{len(result.layers.unmatched)} int8 tensor(s) have no float counterpart and are "
            f"not analysed: {shown}"
        )
    notes += [f"Node {node}: {why}; not analysed." for node, why in pair.qdq.unsupported]
    return (*notes, *_promotion_notes(pair.plan))


# The lines of a plan step that say what an int16 promotion (§R.11) widened and cost.
_PROMOTION_LINES = ("promoted to int16:", "mcu footprint", "ONNX Runtime has no 16-bit")


def _promotion_notes(plan: QuantPlan | None) -> list[str]:
    """Each tensor a promotion to int16 widened, with its cost, from the plan's steps."""
    if plan is None:
        return []
    return [
        f"{step.name}: {note}"
        for step in plan.steps
        for note in step.notes
        if note.startswith(_PROMOTION_LINES)
    ]
