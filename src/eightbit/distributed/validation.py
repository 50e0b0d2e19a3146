"""``validate`` and ``report`` on Ray: the passes over the data run shard by shard (§S.2).

Each task loads the two models once (one copy per node in the object store), runs its
shard batch by batch and returns, per batch, the tallies of that batch alone. This
process folds them in batch order with the tallies' ``merge``, which makes the additions
``update`` makes in one process: the sums, and so every figure and the JSON, are the same
bits. The what-if pass runs the same way. Latency and memory are measured here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx

from eightbit.analysis.labels import check_label_count
from eightbit.analysis.models import DataLike, ModelLike, ModelPair, load_pair
from eightbit.analysis.outputs import Metric, OutputMetrics, OutputTally
from eightbit.analysis.ranges import RangeCounter
from eightbit.analysis.side_by_side import (
    Measurement,
    SideBySide,
    Tallies,
    VariantRuns,
    empty_tallies,
    slice_labels,
)
from eightbit.analysis.validate import Passes, RunOptions, ValidationResult, validate_pair
from eightbit.calibrate import DataSource, ImageOptions
from eightbit.calibrate.progress import sample_progress
from eightbit.distributed.cluster import connect, prepared_once, run_in_order, worker_count
from eightbit.distributed.shards import Shard, open_shard, plan_shards
from eightbit.errors import DataError


def validate_on_ray(
    float_model: ModelLike,
    int8_model: ModelLike,
    data: DataLike,
    *,
    ray: str = "local",
    options: RunOptions = RunOptions(),  # noqa: B008 (frozen, so sharing is safe)
    **settings: Any,
) -> ValidationResult:
    """``eightbit.analysis.validate`` on the Ray cluster ``ray``, with the same result;
    ``settings`` are ``validate``'s (labels, metric, layers, what_if, latency_runs)."""
    pair = load_pair(float_model, int8_model, find_plan=False)
    return validate_pair(
        pair, data, options=options, passes=ray_passes(data, options, ray), **settings
    )


def ray_passes(data: DataLike, options: RunOptions, ray: str) -> Passes:
    """``Passes`` that run on the cluster ``ray`` over ``data`` read with ``options``."""
    runner = _RayRunner(data, options, ray)
    return Passes(measure=runner.measure, variants=runner.variants)


class _RayRunner:
    def __init__(self, data: DataLike, options: RunOptions, address: str) -> None:
        self.data, self.options, self.address = data, options, address

    def _shards(self, pair: ModelPair) -> tuple[Any, list[Shard], str]:
        cluster = connect(self.address)
        shards, label = plan_shards(
            self.data, pair.float_graph.inputs, batch_size=self.options.batch_size,
            image=self.options.image, start=0, count=self.options.samples,
            workers=worker_count(cluster),
        )  # fmt: skip
        return cluster, shards, label

    def measure(
        self,
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
        """``side_by_side.measure``, one task per shard."""
        if labels is not None and source.samples is not None:
            check_label_count(labels, source.samples, at_least=not exact_labels)
        cluster, shards, label = self._shards(pair)
        models = cluster.put(_model_bytes(pair))
        settings = (self.options.batch_size, self.options.image, label, threads)
        calls = [
            (models, shard, settings, _shard_labels(labels, shard), bool(metrics),
             activations, compare)
            for shard in shards
        ]  # fmt: skip
        outputs, observed = empty_tallies(pair, activations=activations, keep=bool(metrics))
        with sample_progress(source.samples, "validating", show=progress) as advance:
            parts = run_in_order(cluster, measure_shard, calls, _advance(advance, shards))
        samples = 0
        for batches in parts:
            for count, (batch_outputs, batch_observed) in batches:
                _fold(outputs, observed, batch_outputs, batch_observed)
                samples += count
        if samples == 0:
            raise DataError(f"{source.label} gave no samples; check the data")
        return Measurement(
            samples=samples,
            outputs=tuple(tally.result(metrics) for tally in outputs.values()),
            activations=tuple(tally.report() for tally in observed),
            first_batch=next(iter(source)),
        )

    def variants(
        self,
        pair: ModelPair,
        source: DataSource,
        variants: Sequence[onnx.ModelProto],
        *,
        threads: int | None = None,
        progress: bool = False,
    ) -> list[tuple[OutputMetrics, ...]]:
        """``side_by_side.measure_variants``, one task per shard."""
        if not variants:
            return []
        cluster, shards, label = self._shards(pair)
        models = cluster.put(_model_bytes(pair))
        variant_bytes = cluster.put([variant.SerializeToString() for variant in variants])
        settings = (self.options.batch_size, self.options.image, label, threads)
        calls = [(models, variant_bytes, shard, settings) for shard in shards]
        names = [info.name for info in pair.float_graph.outputs]
        totals = [{name: OutputTally(name) for name in names} for _ in variants]
        with sample_progress(source.samples, "what-if runs", show=progress) as advance:
            parts = run_in_order(cluster, variants_shard, calls, _advance(advance, shards))
        for batches in parts:
            for batch in batches:
                for total, tally in zip(totals, batch, strict=True):
                    for name in names:
                        total[name].merge(tally[name])
        return [tuple(t.result() for t in total.values()) for total in totals]


def _model_bytes(pair: ModelPair) -> tuple[bytes, bytes]:
    return pair.deployed_float.SerializeToString(), pair.deployed_int8.SerializeToString()


def _shard_labels(labels: np.ndarray | None, shard: Shard) -> np.ndarray | None:
    return None if labels is None else labels[shard.start : shard.stop]


def _advance(advance: Any, shards: list[Shard]) -> Any:
    return lambda index, result: advance(shards[index].samples)


def _fold(
    outputs: dict[str, OutputTally],
    observed: list[Any],
    batch_outputs: dict[str, OutputTally],
    batch_observed: list[Any],
) -> None:
    for name, tally in outputs.items():
        tally.merge(batch_outputs[name])
    for total, tally in zip(observed, batch_observed, strict=True):
        total.merge(tally)


def _worker_pair(models: tuple[bytes, bytes]) -> ModelPair:
    float_bytes, int8_bytes = models
    return load_pair(
        onnx.load_from_string(float_bytes), onnx.load_from_string(int8_bytes), find_plan=False
    )


def measure_shard(
    models: tuple[bytes, bytes],
    shard: Shard,
    settings: tuple[int, ImageOptions | None, str, int | None],
    labels: np.ndarray | None,
    keep: bool,
    activations: bool,
    compare: bool,
) -> list[tuple[int, Tallies]]:
    """One task: the samples and the tallies of each batch of one shard, alone."""
    batch_size, image, label, threads = settings

    def build() -> tuple[ModelPair, SideBySide]:
        pair = _worker_pair(models)
        return pair, SideBySide(
            pair, activations=activations, compare=compare, threads=threads or 1
        )

    pair, side_by_side = prepared_once(("measure", *models, activations, compare, threads), build)
    source = open_shard(
        shard, pair.float_graph.inputs, batch_size=batch_size, image=image, label=label
    )
    batches = []
    start = 0
    for batch in source:
        count = len(next(iter(batch.values())))
        tallies = side_by_side.tallies(keep)
        side_by_side.fold(batch, *tallies, slice_labels(labels, start, count))
        batches.append((count, tallies))
        start += count
    return _compacted(batches)


def _compacted(batches: list[tuple[int, Tallies]]) -> list[tuple[int, Tallies]]:
    """The batches with every activation's range counts moved into the first batch's.

    Counts and extremes add exactly in any order (§S.2), and a counter is 2,098 integers
    per activation and batch: the later batches all point to one empty counter instead,
    which pickle sends once.
    """
    if len(batches) < 2:
        return batches
    first = batches[0][1][1]
    empty = [RangeCounter(tally.counter.tensor, tally.counter.params) for tally in first]
    for _, (_, observed) in batches[1:]:
        for index, tally in enumerate(observed):
            first[index].counter.merge(tally.counter)
            tally.counter = empty[index]
    return batches


def variants_shard(
    models: tuple[bytes, bytes],
    variants: list[bytes],
    shard: Shard,
    settings: tuple[int, ImageOptions | None, str, int | None],
) -> list[list[dict[str, OutputTally]]]:
    """One task: each variant's output tallies of each batch of one shard, alone."""
    batch_size, image, label, threads = settings

    def build() -> tuple[ModelPair, VariantRuns]:
        pair = _worker_pair(models)
        return pair, VariantRuns(pair, [onnx.load_from_string(v) for v in variants], threads or 1)

    pair, runs = prepared_once(("variants", *models, *variants, threads), build)
    source = open_shard(
        shard, pair.float_graph.inputs, batch_size=batch_size, image=image, label=label
    )
    batches = []
    for batch in source:
        tallies = runs.tallies()
        runs.fold(batch, tallies)
        batches.append(tallies)
    return batches
