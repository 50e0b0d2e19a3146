"""``validate``: what int8 cost, at the outputs and per layer, and the thresholds CI checks.

The public functions take models (paths or ``ModelProto``) and data (anything
``eightbit.calibrate.open_data`` reads) and return frozen results with ``to_dict()``.
The math is docs/numerics.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from eightbit.analysis.labels import LabelsLike, load_labels
from eightbit.analysis.latency import Latency, measure_latency, slower_finding
from eightbit.analysis.layers import LayerAnalysis, TensorReport, WhatIf, rank, weight_report
from eightbit.analysis.memory import MemoryUsage, memory_usage
from eightbit.analysis.models import DataLike, ModelLike, ModelPair, load_pair
from eightbit.analysis.outputs import Metric, OutputMetrics, named_metrics
from eightbit.analysis.ranges import DynamicRange
from eightbit.analysis.side_by_side import Measurement, measure, measure_variants
from eightbit.analysis.slices import ERROR, Finding, collapse_finding
from eightbit.analysis.variants import with_fake_quant, without_quantization
from eightbit.calibrate import DataSource, ImageOptions, open_data
from eightbit.errors import ConfigError

DEFAULT_WHAT_IF = 3


@dataclass(frozen=True)
class ValidationResult:
    """Output metrics, per-layer analysis (optional), memory and latency (optional)."""

    samples: int
    outputs: tuple[OutputMetrics, ...]
    memory: MemoryUsage
    layers: LayerAnalysis | None = None
    latency: Latency | None = None

    def output(self, name: str) -> OutputMetrics:
        for metrics in self.outputs:
            if metrics.name == name:
                return metrics
        raise ConfigError(
            f"no output named {name!r}; the outputs are {[m.name for m in self.outputs]}"
        )

    def findings(self) -> tuple[Finding, ...]:
        """Errors: every output with a collapsed slice or part (§A.9); then a warning when
        the int8 model was timed slower than the float one (§A.7)."""
        collapses = tuple(
            collapse_finding(metrics.name, metrics.slices)
            for metrics in self.outputs
            if metrics.collapsed and metrics.slices is not None
        )
        slower = None if self.latency is None else slower_finding(self.latency)
        return collapses if slower is None else (*collapses, slower)

    def to_dict(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "outputs": [metrics.to_dict() for metrics in self.outputs],
            "findings": [finding.to_dict() for finding in self.findings()],
            "memory": self.memory.to_dict(),
            "layers": None if self.layers is None else self.layers.to_dict(),
            "latency": None if self.latency is None else self.latency.to_dict(),
        }


@dataclass(frozen=True)
class RunOptions:
    """How the data is read and the models run (shared by every analysis)."""

    batch_size: int = 16
    samples: int | None = None
    threads: int | None = None
    image: ImageOptions | None = None
    progress: bool = False


@dataclass(frozen=True)
class Passes:
    """How the passes over the data run: in this process, or on a cluster
    (``eightbit.distributed``), with the same results."""

    measure: Callable[..., Measurement] = measure
    variants: Callable[..., list[tuple[OutputMetrics, ...]]] = measure_variants


IN_PROCESS = Passes()


def validate(
    float_model: ModelLike,
    int8_model: ModelLike,
    data: DataLike,
    *,
    labels: LabelsLike | None = None,
    metric: Metric | Mapping[str, Metric] | None = None,
    layers: bool = True,
    what_if: int = DEFAULT_WHAT_IF,
    latency_runs: int = 0,
    options: RunOptions = RunOptions(),
) -> ValidationResult:
    """Compare ``int8_model`` with ``float_model`` on ``data``.

    ``labels``: class ids (array, ``.npy``, or a folder of images in class sub-folders)
    for accuracy. ``metric``: ``metric(float_output, int8_output) -> float``, or a mapping
    of names to such, applied to each whole output. ``layers``: per-layer analysis, with
    what-if runs for the ``what_if`` worst activations. ``latency_runs``: timed runs of
    each model (0: no latency).
    """
    return validate_pair(
        load_pair(float_model, int8_model, find_plan=False),
        data,
        labels=labels,
        metric=metric,
        layers=layers,
        what_if=what_if,
        latency_runs=latency_runs,
        options=options,
    )


def validate_pair(
    pair: ModelPair,
    data: DataLike,
    *,
    labels: LabelsLike | None = None,
    metric: Metric | Mapping[str, Metric] | None = None,
    layers: bool = True,
    what_if: int = DEFAULT_WHAT_IF,
    latency_runs: int = 0,
    options: RunOptions = RunOptions(),
    passes: Passes = IN_PROCESS,
) -> ValidationResult:
    """``validate`` on models already loaded with ``load_pair``; ``passes`` run the
    passes over the data (in this process unless a cluster's are given)."""
    _check_count("what_if", what_if)
    _check_count("latency_runs", latency_runs)
    metrics = named_metrics(metric)
    class_ids = None if labels is None else load_labels(labels)
    source = _open(pair, data, options)
    measured = passes.measure(
        pair,
        source,
        labels=class_ids,
        exact_labels=options.samples is None,
        metrics=metrics,
        activations=layers,
        compare=layers,
        threads=options.threads,
        progress=options.progress,
    )
    if class_ids is not None and not any(m.is_classification for m in measured.outputs):
        raise ConfigError(
            "labels were given but no output has the shape (samples, classes); accuracy "
            "needs a classification output"
        )
    analysis = None
    if layers:
        analysis = LayerAnalysis(
            samples=measured.samples,
            activations=measured.activations,
            weights=weight_reports(pair),
            unmatched=_unmatched(pair),
        )
        analysis = _with_what_if(pair, source, analysis, what_if, options, passes)
    latency = None
    if latency_runs:
        batch = _fixed_batch(pair) or 1
        feed = {name: array[:batch] for name, array in measured.first_batch.items()}
        latency = measure_latency(pair.deployed_float, pair.deployed_int8, feed, runs=latency_runs)
    return ValidationResult(
        samples=measured.samples,
        outputs=measured.outputs,
        memory=memory_usage(
            pair.float_graph, pair.int8_graph, float_path=pair.float_path, int8_path=pair.int8_path
        ),
        layers=analysis,
        latency=latency,
    )


def layer_analysis(
    float_model: ModelLike,
    int8_model: ModelLike,
    data: DataLike,
    *,
    what_if: int = DEFAULT_WHAT_IF,
    options: RunOptions = RunOptions(),
) -> LayerAnalysis:
    """Accumulated and own SQNR of every quantized tensor, worst first, with what-ifs (§A.3)."""
    result = validate(float_model, int8_model, data, what_if=what_if, options=options)
    assert result.layers is not None  # layers=True always analyses them
    return result.layers


def dynamic_ranges(
    float_model: ModelLike,
    int8_model: ModelLike,
    data: DataLike,
    *,
    options: RunOptions = RunOptions(),
) -> tuple[DynamicRange, ...]:
    """The log2 histogram, window, overflow and underflow of every quantized tensor (§A.5).

    Activations first (topological order), then weights. Only the float model runs.
    """
    pair = load_pair(float_model, int8_model, find_plan=False)
    source = _open(pair, data, options)
    measured = measure(
        pair, source, compare=False, threads=options.threads, progress=options.progress
    )
    reports = (*measured.activations, *weight_reports(pair))
    return tuple(report.range for report in reports)


def weight_reports(pair: ModelPair) -> tuple[TensorReport, ...]:
    """Reports of the 8-bit weights that have a float counterpart."""
    return tuple(
        weight_report(
            weight,
            np.asarray(pair.float_graph.initializers[weight.float_name]),
            np.asarray(pair.int8_graph.initializers[weight.name]),
            weight.op_type,
        )
        for weight in pair.qdq.eight_bit_weights
        if weight.float_name is not None
    )


def check_thresholds(
    result: ValidationResult,
    *,
    min_agreement: float | None = None,
    min_sqnr: float | None = None,
) -> tuple[str, ...]:
    """One line per output that misses a threshold (§A.8), and, when any threshold is
    given, per output with a collapsed slice or part (§A.9; warnings are not failures);
    empty when all are met."""
    failures = []
    if min_agreement is not None or min_sqnr is not None:
        failures += [f.message for f in result.findings() if f.level == ERROR]
    if min_agreement is not None:
        if not 0.0 <= min_agreement <= 1.0:
            raise ConfigError(
                f"'min_agreement' must be a fraction in [0, 1] (got {min_agreement!r}); "
                "for 99% write 0.99"
            )
        classified = [m for m in result.outputs if m.top1_agreement is not None]
        if not classified:
            raise ConfigError(
                "--min-agreement needs a classification output of shape (samples, classes); "
                "this model has none (use --min-sqnr)"
            )
        failures += [
            f"output {m.name!r}: top-1 agreement {m.top1_agreement:.4f} < {min_agreement}"
            for m in classified
            if m.top1_agreement is not None and m.top1_agreement < min_agreement
        ]
    if min_sqnr is not None:
        if not math.isfinite(min_sqnr):
            raise ConfigError(f"'min_sqnr' must be a finite number of dB (got {min_sqnr!r})")
        failures += [
            f"output {m.name!r}: SQNR {m.sqnr_db:.2f} dB < {min_sqnr} dB"
            for m in result.outputs
            if m.sqnr_db < min_sqnr
        ]
    return tuple(failures)


def _open(pair: ModelPair, data: DataLike, options: RunOptions) -> DataSource:
    return open_data(
        data,
        pair.float_graph.inputs,
        batch_size=options.batch_size,
        image=options.image,
        limit=options.samples,
    )


def _with_what_if(
    pair: ModelPair,
    source: DataSource,
    analysis: LayerAnalysis,
    count: int,
    options: RunOptions,
    passes: Passes,
) -> LayerAnalysis:
    """Run the what-ifs of the ``count`` worst activations (§A.3)."""
    worst = rank(analysis.activations)[:count]
    if not worst:
        return analysis
    chosen = [pair.qdq.activation(report.name) for report in worst]
    variants = [with_fake_quant(pair.float_model, a.name, a.params) for a in chosen]
    variants += [
        without_quantization(pair.int8_model, a, pair.qdq, pair.float_graph) for a in chosen
    ]
    results = passes.variants(
        pair, source, variants, threads=options.threads, progress=options.progress
    )
    entries = tuple(
        WhatIf(a.name, a.producer, results[i], results[len(chosen) + i])
        for i, a in enumerate(chosen)
    )
    return LayerAnalysis(
        samples=analysis.samples,
        activations=analysis.activations,
        weights=analysis.weights,
        what_if=entries,
        unmatched=analysis.unmatched,
    )


def _fixed_batch(pair: ModelPair) -> int | None:
    """The model's fixed batch size (latency runs one batch of it), or None when dynamic."""
    for info in pair.float_graph.inputs:
        if info.shape and isinstance(info.shape[0], int) and info.shape[0] > 0:
            return info.shape[0]
    return None


def _unmatched(pair: ModelPair) -> tuple[str, ...]:
    weights = [w.name for w in pair.qdq.eight_bit_weights if w.float_name is None]
    return (*pair.qdq.unmatched, *weights)


def _check_count(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError(f"{name!r} must be an integer >= 0 (got {value!r})")
