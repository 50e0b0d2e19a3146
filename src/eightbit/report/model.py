"""The report's data: plain frozen values built from analysis results, rendered by one template.

Nothing here knows HTML. ``ReportData`` holds what the page shows, already joined (a
layer row combines the node, its plan decision, its output tensor's SQNRs and range, its
weights' SQNR and its parameter bytes), so the renderer only formats.
"""

from __future__ import annotations

from dataclasses import dataclass

from eightbit.analysis import Latency, OutputMetrics
from eightbit.analysis.slices import Finding

LayerStatus = str  # "int8", "float" or "input"


@dataclass(frozen=True)
class Summary:
    title: str
    float_model: str
    int8_model: str
    samples: int
    float_param_bytes: int
    int8_param_bytes: int
    saved_percent: float
    float_file_bytes: int | None
    int8_file_bytes: int | None
    latency: Latency | None
    outputs: tuple[OutputMetrics, ...]
    quantized_tensors: int
    float_nodes: int
    has_plan: bool
    version: str


@dataclass(frozen=True)
class LayerRow:
    """One node of the int8 model (or a quantized graph input), in topological order.

    ``worst_rank`` is 1 for the activation with the lowest own SQNR. Percentages are of
    all values observed; None where a column does not apply.
    """

    index: int
    node: str
    op_type: str
    status: LayerStatus
    reason: str | None
    tensor: str | None
    dtype: str | None
    scale: float | None
    zero_point: int | None
    sqnr_own_db: float | None
    sqnr_accumulated_db: float | None
    weight_sqnr_db: float | None
    overflow_percent: float | None
    underflow_percent: float | None
    float_bytes: int
    int8_bytes: int
    worst_rank: int | None


@dataclass(frozen=True)
class HistogramData:
    """A log2 histogram (bin k: |x| in [2^k, 2^(k+1))) and the format's window (§A.4, A.5).

    ``low_bit`` is log2 of one LSB; values below ``low_bit − 1`` round to zero.
    ``positive_bit``/``negative_bit`` are log2 of the largest magnitude of each sign
    (None when the format holds no value of that sign).
    """

    tensor: str
    kind: str
    node: str | None
    dtype: str
    per_channel: bool
    first_bin: int
    counts: tuple[int, ...]
    zeros: int
    total: int
    low_bit: float
    positive_bit: float | None
    negative_bit: float | None
    overflow_percent: float
    underflow_percent: float
    minimum: float
    maximum: float
    worst_rank: int | None

    @property
    def high_bit(self) -> float:
        return max(
            bit for bit in (self.positive_bit, self.negative_bit, self.low_bit) if bit is not None
        )


@dataclass(frozen=True)
class Decision:
    node: str
    op_type: str
    quantized: bool
    reason: str | None
    fused_into: str | None
    fused_activation: str | None


@dataclass(frozen=True)
class WhatIfRow:
    """Output SQNR and top-1 agreement (first output) of the what-if runs of one tensor."""

    tensor: str
    node: str | None
    own_sqnr_db: float | None
    only_quantized_sqnr_db: float
    only_quantized_agreement: float | None
    kept_float_sqnr_db: float
    kept_float_agreement: float | None
    int8_sqnr_db: float
    int8_agreement: float | None


@dataclass(frozen=True)
class FixRow:
    """What keeping one node in float would buy and cost (docs/numerics.md §A.10).

    ``gain_db``: the first output's SQNR with the node in float minus the int8 model's;
    ``extra_bytes``: the node's float parameter bytes minus its int8 ones.
    """

    node: str
    tensor: str
    int8_db: float
    kept_float_db: float
    extra_bytes: int

    @property
    def gain_db(self) -> float:
        if self.kept_float_db == self.int8_db:  # equal infinities too: nothing gained
            return 0.0
        return self.kept_float_db - self.int8_db


@dataclass(frozen=True)
class ReportData:
    summary: Summary
    layers: tuple[LayerRow, ...]
    histograms: tuple[HistogramData, ...]
    decisions: tuple[Decision, ...]
    what_if: tuple[WhatIfRow, ...]
    notes: tuple[str, ...]
    findings: tuple[Finding, ...] = ()  # collapsed output slices (§A.9), int8 slower (§A.7)

    @property
    def worst(self) -> tuple[LayerRow, ...]:
        ranked = [row for row in self.layers if row.worst_rank is not None]
        return tuple(sorted(ranked, key=lambda row: row.worst_rank or 0))

    @property
    def fixes(self) -> tuple[FixRow, ...]:
        """The what-if runs as gains and costs, largest gain first (no new measurement)."""
        layers = {row.node: row for row in self.layers}
        rows = []
        for entry in self.what_if:
            layer = layers.get(entry.node or f"(input) {entry.tensor}")
            extra = 0 if layer is None else layer.float_bytes - layer.int8_bytes
            rows.append(
                FixRow(
                    node=entry.node or f"(input) {entry.tensor}",
                    tensor=entry.tensor,
                    int8_db=entry.int8_sqnr_db,
                    kept_float_db=entry.kept_float_sqnr_db,
                    extra_bytes=extra,
                )
            )
        return tuple(sorted(rows, key=lambda row: -row.gain_db))
