"""Measurements the steps decide by, on a few calibration samples (docs/numerics.md §I.1).

- ``read_samples``: the first samples of the calibration data, held in memory (a few
  dozen: every step reads them more than once);
- ``run_reductions``: per-channel maxima and per-position sums of inner float tensors;
- ``compare``: float vs int8, the SQNR of chosen layers and of the first output, in one
  pass over a merged graph;
- ``OutputReference``: the one evaluator: the float model's first output, kept, so that
  many int8 candidates can be scored against it cheaply (SQNR, or what a fallback budget
  reads).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import onnx

from eightbit.analysis.metrics import sqnr_db, sqnr_from_sums
from eightbit.analysis.outputs import Metric, OutputTally
from eightbit.calibrate import open_data
from eightbit.calibrate.data import Batch, DataLike
from eightbit.errors import ConfigError, DataError
from eightbit.graph import Graph, exposing_session, make_session
from eightbit.graph.run_size import samples_per_run
from eightbit.graph.session import through_file
from eightbit.improve._onnx import Reduction, comparison_model, with_reductions
from eightbit.improve.budget import Measured
from eightbit.improve.float_pass import int8_outputs

# Samples per ONNX Runtime run while measuring.
BATCH = 16


def read_samples(data: DataLike, graph: Graph, samples: int) -> list[Batch]:
    """Up to ``samples`` samples of ``data`` as batches for the model of ``graph``: of
    ``BATCH`` samples, or fewer where one run's activations would not fit (§C.9)."""
    batch_size = samples_per_run(graph, BATCH)
    source = open_data(data, graph.inputs, batch_size=batch_size, limit=samples)
    batches = [dict(batch) for batch in source]
    if not batches:
        raise DataError("no calibration samples to measure with (the data is empty)")
    return batches


def channel_rows(
    model: onnx.ModelProto, names: Sequence[str], batches: Sequence[Batch], threads: int | None
) -> Iterator[tuple[str, np.ndarray]]:
    """(name, values as rows of its last axis) for each tensor ``names`` on each batch, from
    one session exposing them all: the per-channel statistics of SmoothQuant and the
    outlier split."""
    session = exposing_session(model, names, threads=threads, lean=True)
    for batch in batches:
        for name, value in zip(names, session.run(names, batch), strict=True):
            yield name, np.asarray(value).reshape(-1, value.shape[-1])


def count(batches: Sequence[Batch]) -> int:
    return sum(len(next(iter(batch.values()))) for batch in batches)


def run_reductions(
    model: onnx.ModelProto,
    reductions: Sequence[Reduction],
    batches: Sequence[Batch],
    threads: int | None = None,
) -> dict[str, np.ndarray]:
    """Each reduction over all ``batches``, keyed ``"tensor|kind"`` (float64): extremes
    combined by max and min, sums added."""
    measuring, names = with_reductions(model, reductions)
    session = make_session(measuring, threads=threads, lean=True)
    del measuring  # the session holds its own copy
    totals: dict[str, np.ndarray] = {}
    for batch in batches:
        for reduction, value in zip(reductions, session.run(names, batch), strict=True):
            value = np.asarray(value, np.float64)
            key = reduction.tensor + "|" + reduction.kind
            previous = totals.get(key)
            if previous is None:
                totals[key] = value
            elif reduction.kind == "max_abs":
                totals[key] = np.maximum(previous, value)
            elif reduction.kind == "min":
                totals[key] = np.minimum(previous, value)
            else:
                totals[key] = previous + value
    return totals


@dataclass(frozen=True)
class Compared:
    """SQNR (dB) of each compared tensor (by label) and of the first output; float means.

    ``output_shift``: the mean of (int8 − float) of the first output per channel, when asked.
    """

    layers: Mapping[str, float]
    output_db: float
    means: Mapping[str, np.ndarray]
    output_shift: np.ndarray | None = None


def compare(
    float_model: onnx.ModelProto,
    quantized_model: onnx.ModelProto,
    batches: Sequence[Batch],
    tensors: Mapping[str, str] | None = None,
    means: Sequence[str] = (),
    threads: int | None = None,
    output_rank: int | None = None,
) -> Compared:
    """Float vs int8 on ``batches``: SQNR of ``tensors`` (label -> tensor) and of the first
    output, the per-position float means of ``means``, and with ``output_rank`` the first
    output's mean shift per channel."""
    # A big pair's weights stay in the two models: the session's file is written from them.
    shared: dict[str, onnx.TensorProto] | None = None
    if through_file(float_model, quantized_model):
        shared = {}
    merged, names = comparison_model(
        float_model, quantized_model, tensors or {}, means, output_rank, shared
    )
    session = make_session(merged, threads=threads, lean=True, weights=shared)
    del merged, shared  # the session holds its own copy: the weights are not held twice
    order = names.names()
    sums = dict.fromkeys(order, 0.0)
    arrays: dict[str, np.ndarray] = {}
    array_names = set(names.means.values())
    if names.output_channels is not None:
        array_names.add(names.output_channels[0])
    elements = 0
    for batch in batches:
        for name, value in zip(order, session.run(order, batch), strict=True):
            if name in array_names:
                arrays[name] = arrays.get(name, 0.0) + np.asarray(value, np.float64)
            elif names.output_channels is not None and name == names.output_channels[1]:
                shape = [int(d) for d in np.asarray(value)]
                elements += math.prod(shape) // shape[1]
            else:
                sums[name] += float(value)
    samples = count(batches)
    shift = None
    if names.output_channels is not None and elements:
        shift = arrays[names.output_channels[0]] / elements
    return Compared(
        layers={
            layer: sqnr_from_sums(sums[signal], sums[noise])
            for layer, (noise, signal) in names.layer_sums.items()
        },
        output_db=sqnr_from_sums(sums[names.output_sums[1]], sums[names.output_sums[0]]),
        means={tensor: arrays[name] / samples for tensor, name in names.means.items()},
        output_shift=shift,
    )


class OutputReference:
    """The one evaluator: the float model's first output on ``batches``, computed once, and
    int8 candidates scored against it (§R.7, §I.1).

    ``batches``: a list, or any source that can be read again (each score reads it once
    more instead of holding every batch in memory). ``metric(float_output, int8_output)``:
    a user score for ``measure``'s ``metric_drop``, from ``metric(f, f)``. ``computed``:
    the first output's name and its values on every batch, computed already (§C.10;
    ``batches`` is then a list), so the float model is not run.
    """

    def __init__(
        self,
        float_model: onnx.ModelProto,
        batches: Iterable[Batch],
        threads: int | None,
        metric: Metric | None = None,
        *,
        computed: tuple[str, np.ndarray] | None = None,
    ) -> None:
        self.batches, self.threads, self.metric = batches, threads, metric
        if computed is not None:  # (C.10) the first output (name, values), already computed
            self.name, whole = computed
            sizes = np.cumsum([len(next(iter(batch.values()))) for batch in batches])[:-1]
            self.references = np.split(whole, sizes)
        else:
            self.name, self.references = first_outputs(float_model, batches, threads)
        self.samples = sum(len(reference) for reference in self.references)
        self.float_score = float_score(self.references, metric)

    @cached_property
    def values(self) -> np.ndarray:
        """The float output on every batch, in order."""
        return np.concatenate(self.references)

    def outputs(self, quantized_model: onnx.ModelProto) -> np.ndarray:
        """The first output of ``quantized_model`` on every batch, in order. A caller that
        hands the model over (holds no reference) lets a big one go while its session
        runs (§C.11)."""
        given = [quantized_model]
        del quantized_model
        return int8_outputs(given.pop(), self.batches, self.name, self.threads)

    def sqnr(self, quantized_model: onnx.ModelProto) -> float:
        """Output SQNR of ``quantized_model`` (same first output name) on the batches;
        -inf where it is undefined (NaN), so that it ranks last."""
        return self.sqnr_of(self.outputs(quantized_model))

    def sqnr_of(self, values: np.ndarray) -> float:
        """``sqnr`` of int8 outputs already computed (``outputs``)."""
        result = sqnr_db(self.values, values)
        return result if not math.isnan(result) else -math.inf

    def measure(self, quantized_model: onnx.ModelProto) -> Measured:
        """SQNR, top-1 agreement and the metric's drop of ``quantized_model``: what a
        fallback budget reads."""
        tally = OutputTally(self.name, keep=self.metric is not None)
        for reference, output in zip(self.references, self._outputs(quantized_model), strict=True):
            tally.update(reference, output)
        return measured(tally, self.metric, self.float_score)

    __call__ = measure

    def _outputs(self, model: onnx.ModelProto) -> Iterator[np.ndarray]:
        session = make_session(model, threads=self.threads)
        for batch in self.batches:
            yield np.asarray(session.run([self.name], batch)[0])


# How the build ranking (§R.8) scores its candidates: built from the float model and the
# ranking's batches, it maps the candidates' models, in order, to their output SQNRs
# (``OutputReference.sqnr`` each). ``local_sqnrs`` scores here; ``eightbit.distributed``
# scores several candidates at once on a cluster, with the same numbers.
Sqnrs = Callable[[Iterable[onnx.ModelProto]], list[float]]
SqnrsOn = Callable[[onnx.ModelProto, list[Batch]], Sqnrs]


def first_outputs(
    float_model: onnx.ModelProto, batches: Iterable[Batch], threads: int | None
) -> tuple[str, list[np.ndarray]]:
    """The name of ``float_model``'s first output and its values on each batch (one
    session): the reference of ``OutputReference`` and of the ranking on a cluster."""
    session = make_session(float_model, threads=threads)
    name = session.get_outputs()[0].name
    return name, [np.asarray(session.run([name], batch)[0]) for batch in batches]


def local_sqnrs(threads: int | None) -> SqnrsOn:
    """``SqnrsOn`` in this process: one model built, scored and let go at a time."""

    def on(float_model: onnx.ModelProto, batches: list[Batch]) -> Sqnrs:
        reference = OutputReference(float_model, batches, threads)
        return lambda models: [reference.sqnr(model) for model in models]

    return on


def float_score(references: Sequence[np.ndarray], metric: Metric | None) -> float | None:
    """``metric(f, f)`` of the float outputs, from which a budget's drop is counted."""
    if metric is None:
        return None
    whole = np.concatenate(references)
    return _score_value(metric(whole, whole))


def measured(tally: OutputTally, metric: Metric | None, float_score: float | None) -> Measured:
    """What a budget reads of the first output's tally (the outputs kept when ``metric``)."""
    result = tally.result({"budget": metric} if metric is not None else None)
    drop = None
    if float_score is not None:
        drop = float_score - _score_value(result.custom["budget"])
    return Measured(result.sqnr_db, result.top1_agreement, drop)


def _score_value(value: object) -> float:
    try:
        score = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(f"the budget metric must return one number (got {value!r})") from None
    if math.isnan(score):
        raise ConfigError("the budget metric returned NaN")
    return score
