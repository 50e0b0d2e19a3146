"""ONNX Runtime latency, float vs int8: median of timed runs, 1 thread, batch 1 (§A.7)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from eightbit.analysis.slices import WARNING, Finding
from eightbit.errors import ConfigError
from eightbit.graph import make_session

# int8 is reported slower than float past this ratio of the two medians (A.7): under it the
# medians of two timings of one model differ by this much on a shared machine.
SLOWER_THAN_FLOAT = 1.05


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


def slower_finding(latency: Latency) -> Finding | None:
    """(A.7) A warning when the int8 model runs slower than the float one; None otherwise.
    Its ``output`` is empty: it concerns the whole model."""
    if latency.float_ms <= 0 or latency.int8_ms <= SLOWER_THAN_FLOAT * latency.float_ms:
        return None
    return Finding(
        WARNING,
        "",
        f"int8 runs slower than float here: {latency.int8_ms / latency.float_ms:.2f}x its "
        f"time ({latency.int8_ms:.3f} against {latency.float_ms:.3f} ms, batch 1, 1 thread): "
        "it saves memory on this model, not time (small layers spend more on quantizing and "
        "requantizing than int8 arithmetic saves; nodes left in float, or without int8 "
        "kernels on this CPU, add their own cost)",
    )


def median_run_ms(
    model: onnx.ModelProto, feed: Mapping[str, np.ndarray], *, runs: int, warmup: int
) -> float:
    """Median wall time of ``runs`` runs after ``warmup`` untimed ones, in milliseconds."""
    return interleaved_medians_ms([model], feed, runs=runs, warmup=warmup)[0]


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
    _check_runs(runs, warmup)
    sessions = [make_session(model, threads=1) for model in models]
    return _interleaved_ms(sessions, dict(feed), runs, warmup)


def _interleaved_ms(
    sessions: Sequence[Any], inputs: dict[str, np.ndarray], runs: int, warmup: int
) -> list[float]:
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
        _check_runs(runs, warmup)  # at construction, not at the first model timed
        self.feed, self.runs, self.warmup = dict(feed), runs, warmup
        # One float session for every model timed against it.
        self.float_session = make_session(float_model, threads=1)

    def __call__(self, model: onnx.ModelProto) -> float:
        session = make_session(model, threads=1)
        int8_ms, float_ms = _interleaved_ms(
            [session, self.float_session], self.feed, self.runs, self.warmup
        )
        return int8_ms / float_ms


def _check_runs(runs: int, warmup: int) -> None:
    if runs < 1 or warmup < 0:
        raise ConfigError(f"'runs' must be >= 1 and 'warmup' >= 0 (got {runs} and {warmup})")
