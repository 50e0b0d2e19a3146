"""Per-layer error: accumulated and own SQNR of every quantized tensor, worst first (§A.3).

``ActivationTally`` folds batches of one activation (float values, and the int8 model's
dequantized values when compared) into sums of squares and a ``RangeCounter``;
``weight_report`` does the same once for a weight. ``LayerAnalysis`` is the result:
reports in topological order, the ranking, and the what-if runs of the worst few.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from eightbit.analysis.metrics import json_number, sqnr_db, sqnr_from_sums
from eightbit.analysis.outputs import OutputMetrics
from eightbit.analysis.qdq import QuantizedActivation, QuantizedWeight
from eightbit.analysis.ranges import DynamicRange, RangeCounter
from eightbit.errors import DataError
from eightbit.quant import QuantParams, dequantize_values

TensorKind = Literal["activation", "weight"]


@dataclass(frozen=True)
class TensorReport:
    """One quantized tensor: its format, its SQNRs (eqs. A.6, A.7) and its dynamic range.

    ``node`` is the int8 model's node that computes an activation, or the first node that
    reads a weight. ``sqnr_accumulated_db`` is None for weights and when not compared.
    """

    name: str
    kind: TensorKind
    node: str | None
    op_type: str | None
    params: QuantParams
    sqnr_own_db: float | None
    sqnr_accumulated_db: float | None
    range: DynamicRange

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "node": self.node,
            "op_type": self.op_type,
            "params": self.params.to_dict(),
            "sqnr_own_db": json_number(self.sqnr_own_db),
            "sqnr_accumulated_db": json_number(self.sqnr_accumulated_db),
            "range": self.range.to_dict(),
        }


@dataclass(frozen=True)
class WhatIf:
    """Output metrics with only ``tensor`` quantized, and with its producer kept float."""

    tensor: str
    node: str | None
    only_quantized: tuple[OutputMetrics, ...]
    kept_float: tuple[OutputMetrics, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "tensor": self.tensor,
            "node": self.node,
            "only_quantized": [metrics.to_dict() for metrics in self.only_quantized],
            "kept_float": [metrics.to_dict() for metrics in self.kept_float],
        }


@dataclass(frozen=True)
class LayerAnalysis:
    """Every quantized tensor's report; ``unmatched`` int8 tensors had no float counterpart."""

    samples: int
    activations: tuple[TensorReport, ...]
    weights: tuple[TensorReport, ...]
    what_if: tuple[WhatIf, ...] = ()
    unmatched: tuple[str, ...] = ()

    def ranked(self) -> tuple[TensorReport, ...]:
        """Activations worst first: lowest own SQNR, then lowest accumulated SQNR."""
        return rank(self.activations)

    def to_dict(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "worst": [report.name for report in self.ranked()],
            "activations": [report.to_dict() for report in self.activations],
            "weights": [report.to_dict() for report in self.weights],
            "what_if": [entry.to_dict() for entry in self.what_if],
            "unmatched": list(self.unmatched),
        }


def rank(reports: tuple[TensorReport, ...]) -> tuple[TensorReport, ...]:
    def key(report: TensorReport) -> tuple[float, float]:
        own = math.inf if report.sqnr_own_db is None else report.sqnr_own_db
        accumulated = report.sqnr_accumulated_db
        return own, math.inf if accumulated is None else accumulated

    return tuple(sorted(reports, key=key))


class ActivationTally:
    """Sums of squares and range counts of one activation over every batch."""

    def __init__(self, activation: QuantizedActivation) -> None:
        self.activation = activation
        self.counter = RangeCounter(activation.name, activation.params)
        self.signal = 0.0
        self.own_noise = 0.0
        self.accumulated_noise = 0.0
        self.compared = False

    def update(self, values: np.ndarray, int8_values: np.ndarray | None = None) -> None:
        """Fold one batch: the float model's ``values``, the int8 model's when compared."""
        fake_quantized = self.counter.update(values)
        reference = np.asarray(values, dtype=np.float64)
        self.signal += float(np.sum(reference * reference))
        own = reference - fake_quantized
        self.own_noise += float(np.sum(own * own))
        if int8_values is not None:
            if int8_values.shape != reference.shape:
                raise DataError(
                    f"tensor {self.activation.name!r} has shape {reference.shape} in the float "
                    f"model but {int8_values.shape} in the int8 model; give the int8 model "
                    "quantized from this float model"
                )
            accumulated = reference - int8_values
            self.accumulated_noise += float(np.sum(accumulated * accumulated))
            self.compared = True

    def merge(self, batch: ActivationTally) -> None:
        """Fold in the tally of one later batch: the same bits as ``update`` on it (§S.2)."""
        self.counter.merge(batch.counter)
        self.signal += batch.signal
        self.own_noise += batch.own_noise
        self.accumulated_noise += batch.accumulated_noise
        self.compared = self.compared or batch.compared

    def report(self) -> TensorReport:
        activation = self.activation
        return TensorReport(
            name=activation.name,
            kind="activation",
            node=activation.producer,
            op_type=activation.op_type,
            params=activation.params,
            sqnr_own_db=sqnr_from_sums(self.signal, self.own_noise),
            sqnr_accumulated_db=(
                sqnr_from_sums(self.signal, self.accumulated_noise) if self.compared else None
            ),
            range=self.counter.result(),
        )


def weight_report(
    weight: QuantizedWeight, float_values: np.ndarray, stored: np.ndarray, op_type: str | None
) -> TensorReport:
    """A weight's range against its format, and the SQNR of the int8 model's stored values.

    ``op_type`` is that of the first node reading the weight.
    """
    name = weight.float_name or weight.name
    if float_values.shape != stored.shape:
        raise DataError(
            f"weight {name!r} has shape {float_values.shape} in the float model but "
            f"{stored.shape} in the int8 model; give the int8 model quantized from this float model"
        )
    counter = RangeCounter(name, weight.params)
    counter.update(float_values)
    node = weight.readers[0][0] if weight.readers else None
    return TensorReport(
        name=name,
        kind="weight",
        node=node,
        op_type=op_type,
        params=weight.params,
        sqnr_own_db=sqnr_db(float_values, dequantize_values(stored, weight.params)),
        sqnr_accumulated_db=None,
        range=counter.result(),
    )
