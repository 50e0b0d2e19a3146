"""The fallback's candidate scoring on Ray (§S.3): one actor per worker holds the float
model's outputs on its shards; each candidate is scored on every shard at once.

The fallback rebuilds a candidate model, then scores it; ``RayScore`` is the ``Score`` it
takes. Each actor computes the float outputs of its shards once (as ``OutputReference``
does in one process), then, per candidate, returns the tally of each batch alone; this
process folds them in batch order, so the measurement and the nodes the search returns are
those of one process. An actor whose process dies is restarted (its float outputs
computed again) and its call retried.

The ranking (§R.8, ``build``) scores one candidate per node on the same few batches:
``RayScore.sqnrs_on`` sends those batches once and scores whole candidates on the actors
in turn, several at once, each exactly as ``OutputReference.sqnr`` does in one process.
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
    batch_outputs,
    judged_batches,
)
from eightbit.calibrate import ImageOptions
from eightbit.calibrate.data import Batch, DataLike
from eightbit.distributed.cluster import TASK_RETRIES, connect, worker_count
from eightbit.distributed.shards import Shard, open_shard, plan_shards
from eightbit.errors import EightbitError
from eightbit.graph import Graph, make_session
from eightbit.improve.budget import Measured
from eightbit.improve.measure import OutputReference, Sqnrs, float_score, measured


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
        actor = self.cluster.remote(
            num_cpus=1, max_restarts=TASK_RETRIES, max_task_retries=TASK_RETRIES
        )(ShardScorer)
        # Held for the actors' lifetime: a restarted actor reads its arguments again.
        self.model_ref = self.cluster.put(float_model.SerializeToString())
        settings = (batch_size, image, label, threads)
        self.actors = [
            actor.remote(self.model_ref, self.shards[index::workers], settings)
            for index in range(min(workers, len(self.shards)))
        ]
        self.name = self._get([a.output_name.remote() for a in self.actors])[0]
        self.rankings = 0
        self.float_score = None
        if metric is not None:
            references = self._in_shard_order(
                self._get([a.references.remote() for a in self.actors])
            )
            self.float_score = float_score([r for shard in references for r in shard], metric)

    def __call__(self, quantized_model: onnx.ModelProto) -> Measured:
        model_ref = self.cluster.put(quantized_model.SerializeToString())
        keep = self.metric is not None
        calls = [actor.score.remote(model_ref, keep) for actor in self.actors]
        tally = OutputTally(self.name, keep=keep)
        for batches in self._in_shard_order(self._get(calls)):
            for batch in batches:
                tally.merge(batch)
        return measured(tally, self.metric, self.float_score)

    def sqnrs_on(self, float_model: onnx.ModelProto, batches: list[Batch]) -> Sqnrs:
        """``SqnrsOn`` on the actors (which hold ``float_model`` already): candidate ``i``
        goes to actor ``i mod n``, at most two waiting per actor, so the caller builds the
        next candidates while the actors score."""
        del float_model  # the actors' own
        self.rankings += 1
        token, batches_ref = self.rankings, self.cluster.put(batches)

        def sqnrs(models: Iterable[onnx.ModelProto]) -> list[float]:
            pending: deque[Any] = deque()
            values: list[float] = []
            for index, model in enumerate(models):
                actor = self.actors[index % len(self.actors)]
                bytes_ = model.SerializeToString()
                pending.append(actor.rank_sqnr.remote(token, batches_ref, bytes_))
                if len(pending) >= 2 * len(self.actors):
                    values.extend(self._get([pending.popleft()]))
            values.extend(self._get(list(pending)))
            return values

        return sqnrs

    def quick_check(
        self, float_model: onnx.ModelProto, model: onnx.ModelProto, batches: list[Batch]
    ) -> QuickCheck | None:
        """``quick_check`` of ``model`` on ``batches`` (``float_model``: the actors' own):
        batch i on actor i mod n, judged here in batch order as one process judges."""
        n = len(self.actors)
        model_ref = self.cluster.put(model.SerializeToString())
        parts = self._get(
            [actor.outputs.remote(model_ref, batches[i::n]) for i, actor in enumerate(self.actors)]
        )
        ordered = [parts[i % n][i // n] for i in range(len(batches))]
        samples = sum(len(next(iter(batch.values()))) for batch in batches)
        return judged_batches(float_model, ordered, samples)

    def close(self) -> None:
        for actor in self.actors:
            self.cluster.kill(actor)

    def _in_shard_order(self, per_actor: list[dict[int, Any]]) -> list[Any]:
        merged = {index: value for part in per_actor for index, value in part.items()}
        return [merged[shard.index] for shard in self.shards]

    def _get(self, refs: list[Any]) -> list[Any]:
        try:
            return list(self.cluster.get(refs))
        except self.cluster.exceptions.RayTaskError as error:
            if isinstance(error.cause, EightbitError):
                raise type(error.cause)(*error.cause.args) from None
            raise


class ShardScorer:
    """An actor: the float outputs of its shards, and candidates scored against them."""

    def __init__(
        self,
        model_bytes: bytes,
        shards: list[Shard],
        settings: tuple[int, ImageOptions | None, str, int | None],
    ) -> None:
        batch_size, image, label, threads = settings
        self.model = model = onnx.load_from_string(model_bytes)
        inputs = Graph(model).inputs
        self.threads = threads or 1
        self.sources = {
            shard.index: open_shard(shard, inputs, batch_size=batch_size, image=image, label=label)
            for shard in shards
        }
        session = make_session(model, threads=self.threads)
        self.name = session.get_outputs()[0].name
        self.float_outputs = {
            index: [np.asarray(session.run([self.name], batch)[0]) for batch in source]
            for index, source in self.sources.items()
        }

        self.ranking: tuple[int, OutputReference] | None = None

    def output_name(self) -> str:
        return self.name

    def references(self) -> dict[int, list[np.ndarray]]:
        return self.float_outputs

    def outputs(self, model: bytes, batches: list[Batch]) -> list[BatchOutputs]:
        """``batch_outputs`` of the float model and ``model`` on ``batches``."""
        return batch_outputs(self.model, onnx.load_from_string(model), batches, self.threads)

    def rank_sqnr(self, token: int, batches: list[Batch], model: bytes) -> float:
        """``OutputReference.sqnr`` of ``model`` on the ranking ``token``'s ``batches``
        (their float outputs computed on the first call, again after a restart)."""
        if self.ranking is None or self.ranking[0] != token:
            self.ranking = (token, OutputReference(self.model, batches, self.threads))
        return self.ranking[1].sqnr(onnx.load_from_string(model))

    def score(self, model: bytes, keep: bool) -> dict[int, list[OutputTally]]:
        """Per shard, the tally of each batch alone of ``model`` against the float outputs."""
        session = make_session(onnx.load_from_string(model), threads=self.threads)
        tallies = {}
        for index, source in self.sources.items():
            batches = []
            for reference, batch in zip(self.float_outputs[index], source, strict=True):
                tally = OutputTally(self.name, keep=keep)
                tally.update(reference, np.asarray(session.run([self.name], batch)[0]))
                batches.append(tally)
            tallies[index] = batches
        return tallies
