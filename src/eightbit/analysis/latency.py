"""ONNX Runtime latency, float vs int8: median of timed runs, 1 thread, batch 1 (§A.7)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from eightbit.errors import ConfigError
from eightbit.graph import make_session


@dataclass(frozen=True)
class Latency:
    """Median milliseconds per run of each model on one sample."""

    float_ms: float
    int8_ms: float
    runs: int

    @property
    def speedup(self) -> float:
        """float time / int8 time (above 1: int8 is faster)."""
        return self.float_ms / self.int8_ms if self.int8_ms else float("inf")

    def to_dict(self) -> dict[str, Any]:
        return {
            "float_ms": self.float_ms,
            "int8_ms": self.int8_ms,
            "speedup": self.speedup,
            "runs": self.runs,
        }


def median_run_ms(
    model: onnx.ModelProto, feed: Mapping[str, np.ndarray], *, runs: int, warmup: int
) -> float:
    """Median wall time of ``runs`` runs after ``warmup`` untimed ones, in milliseconds."""
    if runs < 1 or warmup < 0:
        raise ConfigError(f"'runs' must be >= 1 and 'warmup' >= 0 (got {runs} and {warmup})")
    session = make_session(model, threads=1)
    inputs = dict(feed)
    for _ in range(warmup):
        session.run(None, inputs)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, inputs)
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def measure_latency(
    float_model: onnx.ModelProto,
    int8_model: onnx.ModelProto,
    feed: Mapping[str, np.ndarray],
    *,
    runs: int = 20,
    warmup: int = 3,
) -> Latency:
    """Latency of both models on ``feed`` (one sample, or the model's fixed batch)."""
    return Latency(
        float_ms=median_run_ms(float_model, feed, runs=runs, warmup=warmup),
        int8_ms=median_run_ms(int8_model, feed, runs=runs, warmup=warmup),
        runs=runs,
    )
