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
from eightbit.analysis.slices import output_parts
from eightbit.calibrate import DataSource
from eightbit.calibrate.progress import sample_progress
from eightbit.errors import DataError
from eightbit.graph import make_session, with_outputs


@dataclass(frozen=True)
class Measurement:
    samples: int
    outputs: tuple[OutputMetrics, ...]
    activations: tuple[TensorReport, ...]
    first_batch: dict[str, np.ndarray]


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
    """One pass over ``source``.

    ``activations`` observes every quantized activation, ``compare`` also reads the int8
    model's values of them (accumulated SQNR). ``labels`` hold one class id per sample of
    the data (``exact_labels``) or at least one per sample used (a sample limit is set).
    """
    output_names = [info.name for info in pair.float_graph.outputs]
    input_names = {info.name for info in pair.float_graph.inputs}
    watched = list(pair.qdq.activations) if activations else []
    float_exposed = [a.name for a in watched if a.name not in input_names]
    float_names = [*output_names, *float_exposed]
    float_session = make_session(
        with_outputs(pair.float_model, float_exposed) if float_exposed else pair.float_model,
        threads=threads,
    )
    int8_session = make_session(pair.int8_model, threads=threads)
    int8_exposed = [a.int8_name for a in watched] if compare else []
    inner_session = (
        make_session(with_outputs(pair.int8_model, int8_exposed), threads=threads)
        if int8_exposed
        else None
    )
    if labels is not None and source.samples is not None:
        check_label_count(labels, source.samples, at_least=not exact_labels)
    parts = output_parts(pair.float_graph)
    tallies = {
        name: OutputTally(name, keep=bool(metrics), parts=parts.get(name, ()))
        for name in output_names
    }
    activation_tallies = [ActivationTally(a) for a in watched]
    first_batch: dict[str, np.ndarray] = {}
    start = 0
    with sample_progress(source.samples, "validating", show=progress) as advance:
        for batch in source:
            count = len(next(iter(batch.values())))
            if not first_batch:
                first_batch = batch
            values = dict(zip(float_names, float_session.run(float_names, batch), strict=True))
            values.update((name, batch[name]) for name in input_names)
            quantized = dict(zip(output_names, int8_session.run(output_names, batch), strict=True))
            batch_labels = _slice_labels(labels, start, count)
            for name, tally in tallies.items():
                tally.update(values[name], quantized[name], batch_labels)
            if inner_session is not None:
                inner = inner_session.run(int8_exposed, batch)
                for observed, int8_values in zip(activation_tallies, inner, strict=True):
                    observed.update(values[observed.activation.name], int8_values)
            else:
                for observed in activation_tallies:
                    observed.update(values[observed.activation.name])
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
    without running the int8 model (a fallback ranks by it)."""
    input_names = {info.name for info in pair.float_graph.inputs}
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
                error = reference - fake_quantized(reference, activation.params, activation.name)
                signal[activation.name] += float(np.sum(reference * reference))
                noise[activation.name] += float(np.sum(error * error))
            count = len(next(iter(batch.values())))
            seen += count
            advance(count)
    if seen == 0:
        raise DataError(f"{source.label} gave no samples; check the data")
    return {name: sqnr_from_sums(signal[name], noise[name]) for name in signal}


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
    output_names = [info.name for info in pair.float_graph.outputs]
    reference_session = make_session(pair.float_model, threads=threads)
    sessions = [make_session(variant, threads=threads) for variant in variants]
    tallies = [{name: OutputTally(name) for name in output_names} for _ in variants]
    with sample_progress(source.samples, "what-if runs", show=progress) as advance:
        for batch in source:
            reference = dict(
                zip(output_names, reference_session.run(output_names, batch), strict=True)
            )
            for session, tally in zip(sessions, tallies, strict=True):
                for name, values in zip(
                    output_names, session.run(output_names, batch), strict=True
                ):
                    tally[name].update(reference[name], values)
            advance(len(next(iter(batch.values()))))
    return [tuple(t.result() for t in tally.values()) for tally in tallies]


def _slice_labels(labels: np.ndarray | None, start: int, count: int) -> np.ndarray | None:
    if labels is None:
        return None
    if labels.shape[0] < start + count:
        raise DataError(
            f"{labels.shape[0]} labels for at least {start + count} samples; "
            "give one label per sample, in the order of the data"
        )
    return labels[start : start + count]
