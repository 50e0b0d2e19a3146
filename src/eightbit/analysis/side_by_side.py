"""Running the float and int8 models side by side over the data, one batch at a time.

``measure`` is the main pass: output metrics on the unmodified int8 model (ONNX Runtime's
int8 kernels) and, per quantized activation, the float values and the int8 model's
dequantized values, exposed as extra graph outputs (§A.3). ``measure_variants`` runs the
what-if models against the float outputs. Only one batch of activations is alive at a
time; everything kept across batches has a fixed size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from eightbit.analysis.labels import check_label_count
from eightbit.analysis.layers import ActivationTally, TensorReport
from eightbit.analysis.metrics import sqnr_from_sums
from eightbit.analysis.models import ModelPair
from eightbit.analysis.outputs import Metric, OutputMetrics, OutputTally
from eightbit.analysis.ranges import fake_quantized
from eightbit.analysis.slices import output_parts, output_probabilities, output_spatial_axes
from eightbit.calibrate import DataSource
from eightbit.calibrate.progress import sample_progress
from eightbit.errors import DataError
from eightbit.graph import make_session, with_outputs
from eightbit.ops.saturating_readers import reader_windows


@dataclass(frozen=True)
class Measurement:
    samples: int
    outputs: tuple[OutputMetrics, ...]
    activations: tuple[TensorReport, ...]
    first_batch: dict[str, np.ndarray]


class SideBySide:
    """The sessions of one pass over the data, and what one batch adds to the tallies.

    ``activations`` observes every quantized activation, ``compare`` also reads the int8
    model's values of them (accumulated SQNR). Built once per pass (per task on a cluster).
    """

    def __init__(
        self, pair: ModelPair, *, activations: bool, compare: bool, threads: int | None
    ) -> None:
        self.pair, self.activations = pair, activations
        self.output_names = [info.name for info in pair.float_graph.outputs]
        self.input_names = {info.name for info in pair.float_graph.inputs}
        self.watched = list(pair.qdq.activations) if activations else []
        float_exposed = [a.name for a in self.watched if a.name not in self.input_names]
        self.float_names = [*self.output_names, *float_exposed]
        self.float_session = make_session(
            with_outputs(pair.float_model, float_exposed) if float_exposed else pair.float_model,
            threads=threads,
        )
        self.int8_session = make_session(pair.int8_model, threads=threads)
        self.int8_exposed = [a.int8_name for a in self.watched] if compare else []
        self.inner_session = (
            make_session(with_outputs(pair.int8_model, self.int8_exposed), threads=threads)
            if self.int8_exposed
            else None
        )

    def tallies(self, keep: bool) -> Tallies:
        """Empty tallies: one per output (``keep``: hold the outputs for user metrics) and
        one per watched activation."""
        return empty_tallies(self.pair, activations=self.activations, keep=keep)

    def fold(
        self,
        batch: dict[str, np.ndarray],
        tallies: dict[str, OutputTally],
        activation_tallies: list[ActivationTally],
        labels: np.ndarray | None,
    ) -> None:
        """Run both models on ``batch`` and add what they computed to the tallies."""
        names = self.float_names
        values = dict(zip(names, self.float_session.run(names, batch), strict=True))
        values.update((name, batch[name]) for name in self.input_names)
        outputs = self.output_names
        quantized = dict(zip(outputs, self.int8_session.run(outputs, batch), strict=True))
        for name, tally in tallies.items():
            tally.update(values[name], quantized[name], labels)
        if self.inner_session is not None:
            inner = self.inner_session.run(self.int8_exposed, batch)
            for observed, int8_values in zip(activation_tallies, inner, strict=True):
                observed.update(values[observed.activation.name], int8_values)
        else:
            for observed in activation_tallies:
                observed.update(values[observed.activation.name])


Tallies = tuple[dict[str, OutputTally], list[ActivationTally]]


def empty_tallies(pair: ModelPair, *, activations: bool, keep: bool) -> Tallies:
    """The tallies a ``SideBySide`` pass fills (also made without its sessions)."""
    parts = output_parts(pair.float_graph)
    probabilities = output_probabilities(pair.float_graph)
    spatial = output_spatial_axes(pair.float_graph)
    outputs = {
        info.name: OutputTally(
            info.name,
            keep=keep,
            parts=parts.get(info.name, ()),
            probabilities=probabilities.get(info.name, ()),
            spatial=spatial.get(info.name, ()),
        )
        for info in pair.float_graph.outputs
    }
    watched = list(pair.qdq.activations) if activations else []
    return outputs, [ActivationTally(a) for a in watched]


def measure(
    pair: ModelPair,
    source: DataSource,
    *,
    labels: np.ndarray | None = None,
    exact_labels: bool = True,
    metrics: Mapping[str, Metric] | None = None,
    activations: bool = True,
    compare: bool = True,
    threads: int | None = None,
    progress: bool = False,
) -> Measurement:
    """One pass over ``source`` (``SideBySide``).

    ``labels`` hold one class id per sample of the data (``exact_labels``) or at least one
    per sample used (a sample limit is set).
    """
    side_by_side = SideBySide(pair, activations=activations, compare=compare, threads=threads)
    if labels is not None and source.samples is not None:
        check_label_count(labels, source.samples, at_least=not exact_labels)
    tallies, activation_tallies = side_by_side.tallies(keep=bool(metrics))
    first_batch: dict[str, np.ndarray] = {}
    start = 0
    with sample_progress(source.samples, "validating", show=progress) as advance:
        for batch in source:
            count = len(next(iter(batch.values())))
            if not first_batch:
                first_batch = batch
            batch_labels = slice_labels(labels, start, count)
            side_by_side.fold(batch, tallies, activation_tallies, batch_labels)
            start += count
            advance(count)
    if start == 0:
        raise DataError(f"{source.label} gave no samples; check the data")
    if labels is not None and exact_labels and source.samples is None:
        check_label_count(labels, start + source.dropped)
    return Measurement(
        samples=start,
        outputs=tuple(tally.result(metrics) for tally in tallies.values()),
        activations=tuple(tally.report() for tally in activation_tallies),
        first_batch=first_batch,
    )


def own_sqnrs(
    pair: ModelPair, source: DataSource, *, threads: int | None = None, progress: bool = False
) -> dict[str, float]:
    """The own SQNR (eq. A.6) of every quantized activation, from one pass of the float model
    alone: the number ``measure`` reports as ``sqnr_own_db``, without its range counts and
    without running the int8 model (a fallback ranks by it). A tensor whose readers are flat
    outside a window (§Q18) is compared within it: its saturation there is no error."""
    input_names = {info.name for info in pair.float_graph.inputs}
    windows = reader_windows(pair.float_graph)
    watched = list(pair.qdq.activations)
    exposed = [a.name for a in watched if a.name not in input_names]
    session = make_session(
        with_outputs(pair.float_model, exposed) if exposed else pair.float_model, threads=threads
    )
    signal = dict.fromkeys((a.name for a in watched), 0.0)
    noise = dict(signal)
    seen = 0
    with sample_progress(source.samples, "ranking", show=progress) as advance:
        for batch in source:
            values = dict(zip(exposed, session.run(exposed, batch), strict=True)) if exposed else {}
            values.update((name, batch[name]) for name in input_names)
            for activation in watched:
                reference = np.asarray(values[activation.name], np.float64)
                if activation.name in windows:
                    reference = np.clip(reference, *windows[activation.name])
                error = reference - fake_quantized(reference, activation.params, activation.name)
                signal[activation.name] += float(np.sum(reference * reference))
                noise[activation.name] += float(np.sum(error * error))
            count = len(next(iter(batch.values())))
            seen += count
            advance(count)
    if seen == 0:
        raise DataError(f"{source.label} gave no samples; check the data")
    return {name: sqnr_from_sums(signal[name], noise[name]) for name in signal}


class VariantRuns:
    """The sessions of the what-if pass: the float model and each variant model."""

    def __init__(
        self, pair: ModelPair, variants: Sequence[onnx.ModelProto], threads: int | None
    ) -> None:
        self.output_names = [info.name for info in pair.float_graph.outputs]
        self.reference_session = make_session(pair.float_model, threads=threads)
        self.sessions = [make_session(variant, threads=threads) for variant in variants]

    def tallies(self) -> list[dict[str, OutputTally]]:
        return [{name: OutputTally(name) for name in self.output_names} for _ in self.sessions]

    def fold(self, batch: dict[str, np.ndarray], tallies: list[dict[str, OutputTally]]) -> None:
        """Run the float model and every variant on ``batch``; add to each variant's tally."""
        names = self.output_names
        reference = dict(zip(names, self.reference_session.run(names, batch), strict=True))
        for session, tally in zip(self.sessions, tallies, strict=True):
            for name, values in zip(names, session.run(names, batch), strict=True):
                tally[name].update(reference[name], values)


def measure_variants(
    pair: ModelPair,
    source: DataSource,
    variants: Sequence[onnx.ModelProto],
    *,
    threads: int | None = None,
    progress: bool = False,
) -> list[tuple[OutputMetrics, ...]]:
    """Output metrics of each variant model against the float model, in one pass."""
    if not variants:
        return []
    runs = VariantRuns(pair, variants, threads)
    tallies = runs.tallies()
    with sample_progress(source.samples, "what-if runs", show=progress) as advance:
        for batch in source:
            runs.fold(batch, tallies)
            advance(len(next(iter(batch.values()))))
    return [tuple(t.result() for t in tally.values()) for tally in tallies]


def slice_labels(labels: np.ndarray | None, start: int, count: int) -> np.ndarray | None:
    if labels is None:
        return None
    if labels.shape[0] < start + count:
        raise DataError(
            f"{labels.shape[0]} labels for at least {start + count} samples; "
            "give one label per sample, in the order of the data"
        )
    return labels[start : start + count]
