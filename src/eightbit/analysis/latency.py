"""ONNX Runtime latency, float vs int8: median of timed runs, 1 thread, batch 1 (§A.7)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping, Sequence
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


def interleaved_medians_ms(
    models: Sequence[onnx.ModelProto],
    feed: Mapping[str, np.ndarray],
    *,
    runs: int,
    warmup: int,
) -> list[float]:
    """Median milliseconds per run of each model, the models' runs interleaved (one of
    each, ``runs`` times), so that a change of the machine's load moves all of them."""
    if runs < 1 or warmup < 0:
        raise ConfigError(f"'runs' must be >= 1 and 'warmup' >= 0 (got {runs} and {warmup})")
    sessions = [make_session(model, threads=1) for model in models]
    inputs = dict(feed)
    for _ in range(warmup):
        for session in sessions:
            session.run(None, inputs)
    times: list[list[float]] = [[] for _ in sessions]
    for _ in range(runs):
        for session, spent in zip(sessions, times, strict=True):
            start = time.perf_counter()
            session.run(None, inputs)
            spent.append(time.perf_counter() - start)
    return [1000.0 * statistics.median(spent) for spent in times]


class LatencyRatio:
    """int8 latency over float latency, one thread, batch 1: ``ratio(model)`` is the
    ratio of the medians of ``runs`` runs of ``model`` interleaved with ``runs`` of the
    float model (``interleaved_medians_ms``)."""

    def __init__(
        self,
        float_model: onnx.ModelProto,
        feed: Mapping[str, np.ndarray],
        *,
        runs: int = 30,
        warmup: int = 3,
    ) -> None:
        if runs < 1 or warmup < 0:
            raise ConfigError(f"'runs' must be >= 1 and 'warmup' >= 0 (got {runs} and {warmup})")
        self.float_model, self.feed = float_model, dict(feed)
        self.runs, self.warmup = runs, warmup

    def __call__(self, model: onnx.ModelProto) -> float:
        int8_ms, float_ms = interleaved_medians_ms(
            [model, self.float_model], self.feed, runs=self.runs, warmup=self.warmup
        )
        return int8_ms / float_ms
