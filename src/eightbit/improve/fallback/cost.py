"""What a fallback cost (docs/numerics.md §R.9): parameter bytes and int8 latency."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from eightbit.analysis.latency import interleaved_medians_ms
from eightbit.analysis.memory import memory_usage
from eightbit.calibrate import DataSource
from eightbit.graph import Graph, TensorInfo


@dataclass(frozen=True)
class FallbackCost:
    """What the returned nodes cost (§R.9): parameter bytes and int8 latency (ms, 1 thread).

    ``returned_float_bytes``/``returned_int8_bytes``: the returned nodes' parameters as they
    are now (float) and as they were (int8, int32 biases). Latencies are None when not timed.
    """

    parameter_bytes_before: int
    parameter_bytes_after: int
    returned_float_bytes: int
    returned_int8_bytes: int
    int8_ms_before: float | None = None
    int8_ms_after: float | None = None
    float_ms: float | None = None

    def describe(self) -> str:
        text = (
            f"parameters {self.parameter_bytes_before:,} -> {self.parameter_bytes_after:,} bytes "
            f"(returned nodes: {self.returned_int8_bytes:,} bytes int8 -> "
            f"{self.returned_float_bytes:,} bytes float)"
        )
        if self.int8_ms_before is not None and self.int8_ms_after is not None:
            text += f"; int8 latency {self.int8_ms_before:.2f} -> {self.int8_ms_after:.2f} ms"
            if self.float_ms:
                ratio = self.int8_ms_after / self.float_ms
                text += f" (float {self.float_ms:.2f} ms: {ratio:.2f}x)"
        return text


def fallback_cost(
    float_model: onnx.ModelProto,
    before: onnx.ModelProto,
    after: onnx.ModelProto,
    returned_nodes: Sequence[str],
    source: DataSource,
    latency_runs: int,
) -> FallbackCost:
    float_graph = Graph(float_model)
    usage_before = memory_usage(float_graph, Graph(before))
    usage_after = memory_usage(float_graph, Graph(after))
    returned = set(returned_nodes)
    int8_bytes = sum(layer.int8_bytes for layer in usage_before.layers if layer.node in returned)
    float_bytes = sum(layer.float_bytes for layer in usage_before.layers if layer.node in returned)
    timings: list[float | None] = [None, None, None]
    if latency_runs:
        feed = one_sample(source, float_graph.inputs)
        timings = list(
            interleaved_medians_ms([before, after, float_model], feed, runs=latency_runs, warmup=2)
        )
    return FallbackCost(
        parameter_bytes_before=usage_before.int8_bytes,
        parameter_bytes_after=usage_after.int8_bytes,
        returned_float_bytes=float_bytes,
        returned_int8_bytes=int8_bytes,
        int8_ms_before=timings[0],
        int8_ms_after=timings[1],
        float_ms=timings[2],
    )


def one_sample(source: DataSource, inputs: Sequence[TensorInfo]) -> dict[str, np.ndarray]:
    """One sample (or the model's fixed batch) of the data: latency is timed at batch 1.
    ``inputs``: the model's (``Graph.inputs``)."""
    batch = next(iter(source))
    fixed = [i.shape[0] for i in inputs if i.shape and isinstance(i.shape[0], int)]
    count = fixed[0] if fixed and fixed[0] > 0 else 1
    return {name: np.ascontiguousarray(values[:count]) for name, values in batch.items()}
