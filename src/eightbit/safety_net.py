"""The default preset's safety net (docs/numerics.md §I.9).

When the quick check on held-back samples finds a collapsed slice or part, or a worst
slice under ``SAFETY_FLOOR_DB``, ``quantize`` runs the accuracy-aware fallback by itself
(``eightbit.improve.fallback.driver``), with the budget "the first output's worst slice reaches
the floor, nothing collapsed" and a latency cap: the int8/float latency ratio of ONNX
Runtime's own int8 of the same model (``quantize_static``), measured here, so the model
stays no slower than what a user would get from ONNX Runtime; a model the net changed is
timed once more beside that reference, run for run, before it is kept (``paired_ratio``).
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx

from eightbit.analysis.floor import SAFETY_FLOOR_DB
from eightbit.analysis.latency import LatencyRatio, interleaved_medians_ms

if TYPE_CHECKING:
    from eightbit.analysis.quick_check import QuickCheck

# The net's model is kept only if no output's SQNR on the held-back samples fell by more
# than this (§I.9): 3 dB is twice the error power, a price no slice is worth.
SAFETY_SQNR_LOSS_DB = 3.0
# Samples ONNX Runtime calibrates on for the latency cap: only its graph is timed, so a
# few samples give the same nodes and the same kernels as many.
CAP_CALIBRATION_SAMPLES = 16
# The cap is ONNX Runtime's int8 latency ratio times this: two timings of the same graph
# differ by a few per cent (§I.9), and the issue's own latency target allows 5%.
CAP_TOLERANCE = 1.05
# Runs of the recheck (§I.9): the net's model and the cap's reference, interleaved. Twice the
# fallback's 30: it decides once, on two int8 models of close speed.
RECHECK_RUNS = 60


@dataclass(frozen=True)
class LatencyCap:
    """The net's latency cap: ``ratio``, the largest int8/float latency it may keep;
    ``what``, how it was set; ``reference``, the int8 model it was measured on (ONNX
    Runtime's, or eightbit's before the net), which the net's model is timed beside before
    it is kept; None skips that recheck."""

    ratio: float
    what: str
    reference: onnx.ModelProto | None = None

    def paired_ratio(self, model: onnx.ModelProto, feed: Mapping[str, np.ndarray]) -> float:
        """``model``'s latency over the reference's, their runs interleaved (one of each,
        ``RECHECK_RUNS`` times): both int8, timed in the same moments, so the load of the
        machine moves both. 1.0 without a reference."""
        if self.reference is None:
            return 1.0
        ours, theirs = interleaved_medians_ms(
            [model, self.reference], feed, runs=RECHECK_RUNS, warmup=3
        )
        return ours / theirs


def missed_floor(check: QuickCheck | None) -> dict[str, str]:
    """Output -> why it needs the safety net (a collapse, or a slice under the floor), for
    every output of ``check`` that misses the floor, in output order."""
    missed: dict[str, str] = {}
    for output in () if check is None else check.outputs:
        worst = output.worst_slice_sqnr_db
        if output.collapsed and output.slices is not None:
            missed[output.name] = (
                f"output {output.name!r} collapsed: {output.slices.describe_collapse()}"
            )
        elif worst < SAFETY_FLOOR_DB:
            missed[output.name] = (
                f"output {output.name!r}: worst slice {worst:.1f} dB < floor {SAFETY_FLOOR_DB:g} dB"
            )
    return missed


def latency_cap(
    timer: LatencyRatio,
    float_model: onnx.ModelProto,
    int8_model: onnx.ModelProto,
    calibration: Iterable[Mapping[str, np.ndarray]],
) -> LatencyCap:
    """The safety net's ``max_latency``, what it is and what it was measured on (§I.9).

    ``CAP_TOLERANCE`` times the int8/float latency (``timer``, as the fallback times) of
    ONNX Runtime's own int8 of ``float_model``. Where ONNX Runtime's quantizer cannot
    quantize the model, the cap is eightbit's ``int8_model`` before the net instead (the
    net may then slow it by the tolerance only).
    """
    try:
        reference = ort_int8(float_model, calibration, len(next(iter(timer.feed.values()))))
    except Exception as exc:  # a third-party quantizer: its failure only changes the cap
        ratio = timer(int8_model) * CAP_TOLERANCE
        why = f"{type(exc).__name__}: {exc}".splitlines()[0][:120]
        what = (
            f"{ratio:.3f}x float: eightbit's int8 before the net + 5% (ONNX Runtime's "
            f"quantize_static failed on this model: {why})"
        )
        return LatencyCap(ratio, what, int8_model)
    ratio = timer(reference) * CAP_TOLERANCE
    what = (
        f"{ratio:.3f}x float: ONNX Runtime's own int8 of this model (quantize_static, "
        "measured here) + 5%"
    )
    return LatencyCap(ratio, what, reference)


def ort_int8(
    float_model: onnx.ModelProto, calibration: Iterable[Mapping[str, np.ndarray]], rows: int
) -> onnx.ModelProto:
    """ONNX Runtime's ``quantize_static`` of ``float_model`` in its documented x86 setting
    (QDQ, per-channel int8 weights, uint8 activations, MinMax) on
    ``CAP_CALIBRATION_SAMPLES`` samples, ``rows`` per feed."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    with _quiet_quantizer(), tempfile.TemporaryDirectory(prefix="eightbit-cap-") as tmp:
        source, target = Path(tmp) / "float.onnx", Path(tmp) / "ort_int8.onnx"
        onnx.save(float_model, source)
        quantize_static(
            str(source),
            str(target),
            _Reader(calibration, CAP_CALIBRATION_SAMPLES, rows),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
        return onnx.load(str(target))


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """ONNX Runtime's quantizer, silenced while it runs and only then: it logs its progress
    on the root logger, and its calibration sessions (its own options, not ``make_session``'s)
    warn on every sample where a model's declared output shape differs from what it computes.
    Neither is the user's business, and the user's root logger level is theirs."""
    import onnxruntime as ort

    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    ort.set_default_logger_severity(3)  # errors only
    try:
        yield
    finally:
        ort.set_default_logger_severity(_ORT_DEFAULT_SEVERITY)  # ONNX Runtime has no getter
        root.setLevel(level)


_ORT_DEFAULT_SEVERITY = 2  # warnings


class _Reader:
    """ONNX Runtime's CalibrationDataReader over the first ``limit`` samples, ``size`` at a
    time (1, or the model's fixed batch size)."""

    def __init__(self, batches: Iterable[Mapping[str, np.ndarray]], limit: int, size: int) -> None:
        self._feeds = self._regrouped(batches, limit, max(size, 1))

    @staticmethod
    def _regrouped(
        batches: Iterable[Mapping[str, np.ndarray]], limit: int, size: int
    ) -> Iterator[dict[str, np.ndarray]]:
        count = 0
        for batch in batches:
            rows = len(next(iter(batch.values())))
            for row in range(0, rows - size + 1, size):
                if count >= limit:
                    return
                yield {name: np.asarray(values[row : row + size]) for name, values in batch.items()}
                count += size

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)
