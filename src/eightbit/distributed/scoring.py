"""The fallback's candidate scoring on Ray (§S.3): tasks on the cluster's workers, against
the float model's outputs computed once per shard and kept in the object store.

The fallback rebuilds a candidate model, then scores it; ``RayScore`` is the ``Score`` it
takes. The shards are dealt into one group per CPU; one task per group computes the float
outputs of its shards (as ``OutputReference`` does in one process) and leaves them in the
object store, and a candidate is scored by one task per group at once, given those outputs,
each returning the tally of each batch alone. This process folds them in shard then batch
order, so the measurement and the nodes the search returns are those of one process. A task
whose process dies is retried on another (Ray rebuilds lost float outputs from their task).
A score task reads only the candidate and its shards (the inputs' names and types and the
output's name come from here), so a worker holds no copy of the float model between tasks.

The tasks run on the workers Ray started with the instance, their imports done as they
started (``cluster.warm_worker``): the fallback starts no process of its own, and a worker
is free for any task between two candidates. Each task opens its sessions on the worker's
one shared arena (``share_arena``): a fresh session per candidate would otherwise fault in
fresh pages for its activations in every task, on every worker.

The ranking (§R.8, ``build``) scores one candidate per node on the same few batches:
``RayScore.sqnrs_on`` sends those batches once, has their float outputs computed once, split
into one task per CPU (``ranking_references``), and scores whole candidates on the workers,
several at once, each exactly as ``OutputReference.sqnr`` does in one process.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any

import numpy as np
import onnx

from eightbit.analysis.outputs import Metric, OutputTally
from eightbit.analysis.quick_check import (
    BatchOutputs,
    QuickCheck,
    every_output,
    judged_batches,
    paired_outputs,
)
from eightbit.calibrate import DataSource, ImageOptions
from eightbit.calibrate.data import Batch, DataLike
from eightbit.distributed.cluster import TASK_RETRIES, connect, worker_count
from eightbit.distributed.shards import Shard, open_shard, plan_shards
from eightbit.errors import EightbitError
from eightbit.graph import Graph, TensorInfo, make_session
from eightbit.graph.session import share_arena
from eightbit.improve.budget import Measured
from eightbit.improve.measure import (
    OutputReference,
    Sqnrs,
    first_outputs,
    float_score,
    measured,
)

# How a worker reads the shards: batch size, image options, the data's label, threads.
Settings = tuple[int, ImageOptions | None, str, int | None]


class RayScore:
    """``OutputReference.measure`` on the Ray cluster ``ray``, with the same result, over
    samples ``[start, start + count)`` of ``data`` read in batches of ``batch_size``."""

    def __init__(
        self,
        float_model: onnx.ModelProto,
        data: DataLike,
        *,
        ray: str,
        batch_size: int,
        metric: Metric | None = None,
        image: ImageOptions | None = None,
        start: int = 0,
        count: int | None = None,
        threads: int | None = None,
    ) -> None:
        self.cluster = connect(ray)
        self.metric = metric
        workers = worker_count(self.cluster)
        graph = Graph(float_model)
        self.shards, label = plan_shards(
            data, graph.inputs, batch_size=batch_size, image=image, start=start, count=count,
            workers=workers,
        )  # fmt: skip
        self.samples = sum(shard.samples for shard in self.shards)
        groups = [self.shards[index::workers] for index in range(workers)]
        # In the object store once: in-memory data travels with its shards.
        self.groups = [self.cluster.put(group) for group in groups if group]
        remote = self.cluster.remote(num_cpus=1, max_retries=TASK_RETRIES)
        self._score = remote(score_shards)
        self._rank = remote(rank_sqnr)
        self._ranking_references = remote(ranking_references)
        self._outputs = remote(check_outputs)
        self._references = remote(shard_references)
        self.model_ref = self.cluster.put(float_model.SerializeToString())
        self.settings: Settings = (batch_size, image, label, threads)
        self.name = float_model.graph.output[0].name  # ONNX Runtime's first output
        self.reader: Reader = (list(graph.inputs), self.name)
        # Each group's float outputs, by shard index: computed once, read by every score.
        self.references = [
            self._references.remote(self.model_ref, self.settings, self.reader, group)
            for group in self.groups
        ]
        self.float_score = None
        if metric is not None:
            references = self._per_shard(self.references)
            self.float_score = float_score([r for shard in references for r in shard], metric)

    def __call__(self, quantized_model: onnx.ModelProto) -> Measured:
        model_ref = self.cluster.put(quantized_model.SerializeToString())
        keep = self.metric is not None
        calls = [
            self._score.remote(self.settings, self.reader, group, floats, model_ref, keep)
            for group, floats in zip(self.groups, self.references, strict=True)
        ]
        tally = OutputTally(self.name, keep=keep)
        for batches in self._per_shard(calls):
            for batch in batches:
                tally.merge(batch)
        return measured(tally, self.metric, self.float_score)

    def sqnrs_on(self, float_model: onnx.ModelProto, batches: list[Batch]) -> Sqnrs:
        """``SqnrsOn`` on the workers: the float outputs on ``batches`` computed once, batch
        i in task i mod n (n: one per group), then every candidate one task given them, at
        most two waiting per CPU, so the caller builds the next candidates while the
        workers score. ``float_model``: the one the workers have already."""
        del float_model  # the workers' own
        n = len(self.groups)
        batches_ref = self.cluster.put(batches)
        parts = [
            self._ranking_references.remote(self.model_ref, self.settings, batches[i::n])
            for i in range(min(n, len(batches)))
        ]

        def sqnrs(models: Iterable[onnx.ModelProto]) -> list[float]:
            pending: deque[Any] = deque()
            values: list[float] = []
            for model in models:
                bytes_ = model.SerializeToString()
                task = self._rank.remote(self.settings, self.name, batches_ref, bytes_, *parts)
                pending.append(task)
                if len(pending) >= 2 * n:
                    values.extend(self._get([pending.popleft()]))
            values.extend(self._get(list(pending)))
            return values

        return sqnrs

    def quick_checks(
        self, float_model: onnx.ModelProto, models: list[onnx.ModelProto], batches: list[Batch]
    ) -> list[QuickCheck | None]:
        """``quick_check`` of each of ``models`` on ``batches`` (``float_model``: the
        workers' own): batch i in task i mod n, each task running the float model once for
        every model, judged here in batch order as one process judges."""
        n = len(self.groups)
        candidates = [self.cluster.put(model.SerializeToString()) for model in models]
        parts = self._get(
            [
                self._outputs.remote(self.model_ref, self.settings, batches[i::n], *candidates)
                for i in range(n)
            ]
        )
        samples = sum(len(next(iter(batch.values()))) for batch in batches)
        return [
            judged_batches(
                float_model, [parts[i % n][c][i // n] for i in range(len(batches))], samples
            )
            for c in range(len(models))
        ]

    def close(self) -> None:
        """Nothing to stop: the workers keep nothing of this scorer between tasks."""

    def _per_shard(self, calls: list[Any]) -> list[Any]:
        """The groups' results (shard index -> value) in shard order."""
        merged = {index: value for part in self._get(calls) for index, value in part.items()}
        return [merged[shard.index] for shard in self.shards]

    def _get(self, refs: list[Any]) -> list[Any]:
        try:
            return list(self.cluster.get(refs))
        except self.cluster.exceptions.RayTaskError as error:
            if isinstance(error.cause, EightbitError):
                raise type(error.cause)(*error.cause.args) from None
            raise


# What a score task needs of the float model: its inputs and the name of its first output.
Reader = tuple[list[TensorInfo], str]


def _sources(settings: Settings, inputs: list[TensorInfo], shards: list[Shard]) -> list[DataSource]:
    batch_size, image, label, _ = settings
    return [
        open_shard(shard, inputs, batch_size=batch_size, image=image, label=label)
        for shard in shards
    ]


def shard_references(
    model: bytes, settings: Settings, reader: Reader, shards: list[Shard]
) -> dict[int, list[np.ndarray]]:
    """One task: the float outputs of each batch of each of ``shards``, by shard index (one
    session, as ``OutputReference`` computes them)."""
    share_arena()
    sources = _sources(settings, reader[0], shards)
    session = make_session(onnx.load_from_string(model), threads=settings[3] or 1)
    name = session.get_outputs()[0].name
    return {
        shard.index: [np.asarray(session.run([name], batch)[0]) for batch in source]
        for shard, source in zip(shards, sources, strict=True)
    }


def score_shards(
    settings: Settings,
    reader: Reader,
    shards: list[Shard],
    references: dict[int, list[np.ndarray]],
    candidate: bytes,
    keep: bool,
) -> dict[int, list[OutputTally]]:
    """One task: per shard, the tally of each batch alone of ``candidate`` against the
    float outputs ``references`` (``shard_references``)."""
    share_arena()
    inputs, name = reader
    sources = _sources(settings, inputs, shards)
    session = make_session(onnx.load_from_string(candidate), threads=settings[3] or 1)
    tallies = {}
    for shard, source in zip(shards, sources, strict=True):
        batches = []
        for reference, batch in zip(references[shard.index], source, strict=True):
            tally = OutputTally(name, keep=keep)
            tally.update(reference, np.asarray(session.run([name], batch)[0]))
            batches.append(tally)
        tallies[shard.index] = batches
    return tallies


def ranking_references(model: bytes, settings: Settings, batches: list[Batch]) -> list[np.ndarray]:
    """One task: the float ``model``'s first output on each of ``batches`` (``first_outputs``,
    as ``OutputReference`` computes them)."""
    share_arena()
    return first_outputs(onnx.load_from_string(model), batches, settings[3] or 1)[1]


def rank_sqnr(
    settings: Settings, name: str, batches: list[Batch], candidate: bytes, *parts: list[np.ndarray]
) -> float:
    """One task: ``OutputReference.sqnr`` of ``candidate`` on ``batches``, whose float
    outputs ``parts`` hold, batch i in part i mod n (``ranking_references``)."""
    share_arena()
    n = len(parts)
    outputs = np.concatenate([parts[i % n][i // n] for i in range(len(batches))])
    # ``computed``: the float model is not run, so none is given (an empty proto).
    computed = (name, outputs)
    reference = OutputReference(onnx.ModelProto(), batches, settings[3] or 1, computed=computed)
    return reference.sqnr(onnx.load_from_string(candidate))


def check_outputs(
    model: bytes, settings: Settings, batches: list[Batch], *candidates: bytes
) -> list[list[BatchOutputs]]:
    """One task: ``batch_outputs`` of the float ``model`` and each of ``candidates`` on
    ``batches``, the float model run once for all of them."""
    share_arena()
    threads = settings[3] or 1
    floats = every_output(onnx.load_from_string(model), batches, threads)
    return [
        paired_outputs(floats, every_output(onnx.load_from_string(candidate), batches, threads))
        for candidate in candidates
    ]
