"""``calibrate`` on Ray: observers filled shard by shard, merged in shard order (§S.1).

Each task loads the normalized model once (the object store holds one copy per node),
reads its shard batch by batch and returns its observers: fixed-size summaries, so a
worker's memory does not grow with the samples. Histograms and extremes merge exactly
(§C.2.3), so the merged observers are those one process fills, and the ranges chosen from
them, and their JSON, are the same bytes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from eightbit.calibrate import CalibrationConfig, ImageOptions, Ranges
from eightbit.calibrate.collect import (
    Observer,
    model_runner,
    observe_all,
    requested_tensors,
    select_ranges,
)
from eightbit.calibrate.data import DataLike, DataSource, require_variation
from eightbit.calibrate.observers import HistogramObserver, MinMaxObserver, make_observer
from eightbit.calibrate.progress import sample_progress
from eightbit.distributed.cluster import connect, prepared_once, run_in_order, worker_count
from eightbit.distributed.shards import Shard, open_shard, plan_shards
from eightbit.errors import ConfigError, DataError
from eightbit.graph import Graph, load_model, normalize
from eightbit.graph.quantized import load_float_model

if TYPE_CHECKING:
    import onnx


@dataclass
class ShardObservation:
    """What one shard's task returns: its observers, its counts, and its first sample
    (whether the samples vary is decided across shards)."""

    observers: dict[str, Observer]
    used: int
    dropped: int
    varied: bool
    first: dict[str, np.ndarray]


def calibrate_on_ray(
    model: str | os.PathLike[str] | onnx.ModelProto,
    data: DataLike,
    config: CalibrationConfig = CalibrationConfig(),  # noqa: B008 (frozen, so sharing is safe)
    *,
    ray: str = "local",
    tensors: Sequence[str] | None = None,
    threads: int | None = None,
    image: ImageOptions | None = None,
    progress: bool = False,
    normalized: bool = False,
    start: int = 0,
    count: int | None = None,
) -> Ranges:
    """``eightbit.calibrate.calibrate`` on the Ray cluster ``ray``, with the same result.

    ``start``/``count``: calibrate on samples ``[start, start + count)`` only (the
    pipeline holds the rest back for its check). ``threads``: ONNX Runtime threads per task
    (default 1: each task holds one CPU of the cluster).
    """
    _check(config)
    prepared = load_model(model) if normalized else normalize(load_float_model(model))
    graph = Graph(prepared)
    names = requested_tensors(graph, tensors)
    if config.samples is not None:
        count = config.samples if count is None else min(count, config.samples)
    cluster = connect(ray)
    shards, label = plan_shards(
        data, graph.inputs, batch_size=config.batch_size, image=image,
        start=start, count=count, workers=worker_count(cluster),
    )  # fmt: skip
    model_ref = cluster.put(prepared.SerializeToString())
    calls = [(model_ref, names, config, shard, image, label, threads) for shard in shards]
    with sample_progress(sum(s.samples for s in shards), "calibrating", show=progress) as advance:
        parts = run_in_order(
            cluster, calibrate_shard, calls, lambda i, part: advance(shards[i].samples)
        )
    return _merged(parts, names, config, label)


def _check(config: CalibrationConfig) -> None:
    if not isinstance(config, CalibrationConfig):
        raise ConfigError(f"'config' must be a CalibrationConfig (got {type(config).__name__})")
    if config.moving_average is not None:
        raise ConfigError(
            "moving averages of the extremes depend on the order of every batch and cannot be "
            "merged across workers; calibrate without --ray, or without --moving-average"
        )
    if config.skip_nonfinite:
        raise ConfigError(
            "skipping non-finite samples moves every later batch boundary, so shards cannot "
            "be cut in advance; clean the data, or calibrate without --ray"
        )


def calibrate_shard(
    model_bytes: bytes,
    names: list[str],
    config: CalibrationConfig,
    shard: Shard,
    image: ImageOptions | None,
    label: str,
    threads: int | None,
) -> ShardObservation:
    """One task: the observers of one shard (runs on a worker)."""
    graph, run = prepared_once(
        ("calibrate", model_bytes, names, threads),
        lambda: _runner(model_bytes, names, threads or 1),
    )
    source = open_shard(shard, graph.inputs, batch_size=config.batch_size, image=image, label=label)
    observers = {name: make_observer(config) for name in names}
    first: dict[str, np.ndarray] = {}
    observe_all(source, _keep_first(run, first), observers, workers=threads or 1, progress=False)
    return ShardObservation(observers, source.used, source.dropped, source.varied, first)


def _runner(model_bytes: bytes, names: list[str], threads: int) -> tuple[Graph, Any]:
    import onnx

    prepared = onnx.load_from_string(model_bytes)
    graph = Graph(prepared)
    return graph, model_runner(prepared, graph, names, threads)


def _keep_first(run: Any, first: dict[str, np.ndarray]) -> Any:
    """``run``, keeping the first sample it is given (to compare shards)."""

    def wrapped(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not first:
            first.update((name, array[:1].copy()) for name, array in batch.items())
        return run(batch)

    return wrapped


def _merged(
    parts: list[ShardObservation], names: list[str], config: CalibrationConfig, label: str
) -> Ranges:
    """The observers of every shard merged in shard order, and the ranges chosen from them."""
    used = sum(part.used for part in parts)
    if used == 0:
        dropped = sum(part.dropped for part in parts)
        if dropped:
            raise DataError(f"the model's fixed batch needs more samples; {label} has {dropped}")
        raise DataError(f"{label} holds no samples")
    observers = {name: _merge([part.observers[name] for part in parts]) for name in names}
    _require_variation(parts, used, label)
    return select_ranges(observers, config, samples=used, skipped=0)


def _merge(observers: list[Observer]) -> Observer:
    merged = observers[0]
    for other in observers[1:]:
        if isinstance(merged, HistogramObserver) and isinstance(other, HistogramObserver):
            combined = HistogramObserver(merged.histogram.bins, merged.values_per_sample)
            combined.histogram = merged.histogram.merge(other.histogram)
            merged = combined
        elif isinstance(merged, MinMaxObserver) and isinstance(other, MinMaxObserver):
            merged = merged.merge(other)
    return merged


def _require_variation(parts: list[ShardObservation], used: int, label: str) -> None:
    """Samples vary when any shard's do, or when two shards start differently."""
    firsts = [part.first for part in parts if part.first]
    varied = any(part.varied for part in parts) or any(
        not np.array_equal(first[name], firsts[0][name]) for first in firsts[1:] for name in first
    )
    # What require_variation reads of a source after an iteration.
    seen = SimpleNamespace(used=used, varied=varied, label=label)
    require_variation(cast(DataSource, seen))
