"""``quantize``'s quick check on Ray (§S.2): the held-back samples cut into shards, each
task returning the float and int8 values of every output on its shard; this process puts
them in sample order and judges them as one process would (``quick_check.judged_batches``).

The check's samples are few (64 by default), so a task carries outputs, not tallies: the
per-slice verdict (§A.9) needs every value of an output, and shipping them keeps the
verdict the one-process computation on the same arrays.
"""

from __future__ import annotations

from typing import Any

import onnx

from eightbit.analysis.quick_check import BatchOutputs, QuickCheck, batch_outputs, judged_batches
from eightbit.calibrate import ImageOptions
from eightbit.calibrate.data import DataLike
from eightbit.distributed.cluster import connect, run_in_order, worker_count
from eightbit.distributed.shards import Shard, open_shard, plan_shards
from eightbit.graph import Graph


def quick_check_on_ray(
    float_model: onnx.ModelProto,
    int8_model: onnx.ModelProto,
    data: DataLike,
    *,
    ray: str,
    batch_size: int,
    start: int,
    count: int,
    image: ImageOptions | None = None,
    threads: int | None = None,
) -> QuickCheck | None:
    """``quick_check`` of samples ``[start, start + count)`` of ``data`` on the cluster
    ``ray``, read in batches of ``batch_size`` (as the one-process check reads them)."""
    cluster = connect(ray)
    shards, label = plan_shards(
        data, Graph(float_model).inputs, batch_size=batch_size, image=image, start=start,
        count=count, workers=worker_count(cluster),
    )  # fmt: skip
    models = cluster.put((float_model.SerializeToString(), int8_model.SerializeToString()))
    settings = (batch_size, image, label, threads)
    parts: list[list[BatchOutputs]] = run_in_order(
        cluster, check_shard, [(models, shard, settings) for shard in shards]
    )
    samples = sum(shard.samples for shard in shards)
    if samples == 0:
        return None
    return judged_batches(float_model, [batch for part in parts for batch in part], samples)


def check_shard(
    models: tuple[bytes, bytes], shard: Shard, settings: tuple[int, ImageOptions | None, str, Any]
) -> list[BatchOutputs]:
    """One task: every output's float and int8 values on each batch of ``shard``."""
    batch_size, image, label, threads = settings
    float_model = onnx.load_from_string(models[0])
    source = open_shard(
        shard, Graph(float_model).inputs, batch_size=batch_size, image=image, label=label
    )
    int8_model = onnx.load_from_string(models[1])
    return batch_outputs(float_model, int8_model, list(source), threads or 1)
