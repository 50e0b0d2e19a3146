"""Section "calibration": speed and memory of calibration on the ResNet-18-style model.

Targets (issue 3):

* bounded memory: peak RSS with 512 samples / with 32 samples <= 1.15, for every method;
* histogram methods cost about as much as min/max: entropy or percentile time / minmax time
  <= 1.5 (512 samples);
* calibration is close to plain inference: calibration time of N samples / float ONNX Runtime
  inference time of the same N samples with the same thread count <= 1.5 (N = 512);
* better than ONNX Runtime's calibrators (``create_calibrator`` + ``collect_data`` +
  ``compute_data``, the calibration step of ``quantize_static``, default options) on the same
  model, samples and method: time ratio < 1 and peak-memory ratio < 1. ORT keeps every
  activation of every sample for its histogram methods (~4 GB at 128 samples here), so this
  comparison uses 128 samples.

Samples are crops of the bundled photos (``images.sample_pool``), stored once in an .npy file
and fed in batches of 16 read from disk, so no process holds 512 images at once. Each
measurement runs in a fresh process (``benchmarks.worker``), whose own peak RSS is reported.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from benchmarks import baselines, images, metrics, models
from benchmarks.adapters import EIGHTBIT_METHODS
from benchmarks.report import Table
from benchmarks.worker import Result, Task, run_in_subprocess

LARGE, SMALL, VERSUS_ORT = 512, 32, 128
BATCH_SIZE = 16
THREADS = os.cpu_count() or 1
# Each run is repeated and the fastest kept: the machine is shared, and a single slow run
# would decide a ratio target.
REPEATS = 2


@dataclass(frozen=True)
class Measurement:
    tool: str  # "eightbit", "ONNX Runtime", "float inference"
    method: str
    samples: int
    result: Result


def _plan(with_ort: bool) -> list[Measurement]:
    """Every run the targets need (results still empty)."""
    runs = [
        ("float inference", "", LARGE),
        *[("eightbit", m, n) for m in EIGHTBIT_METHODS for n in (SMALL, LARGE)],
    ]
    if with_ort:
        for method in baselines.ORT_METHODS:
            runs += [("eightbit", method, VERSUS_ORT), ("ONNX Runtime", method, VERSUS_ORT)]
    return [Measurement(tool, method, n, Result(ok=False)) for tool, method, n in runs]


def _task(m: Measurement, model: Path, pool: Path) -> Task:
    kind = {"float inference": "float_inference", "eightbit": "eightbit_calibrate"}.get(
        m.tool, "ort_calibrate"
    )
    return Task(kind, str(model), str(pool), m.samples, BATCH_SIZE, m.method, threads=THREADS)


def _best(results: list[Result]) -> Result:
    """Fastest of the repeats (the others lost time to the machine's other load), with the
    largest peak RSS any of them reached."""
    ok = [r for r in results if r.ok]
    if not ok:
        return results[0]
    best = min(ok, key=lambda r: r.seconds)
    return replace(best, peak_rss_mb=max(r.peak_rss_mb for r in ok))


def measure(
    model: Path, pool: Path, with_ort: bool = True, repeats: int = REPEATS
) -> list[Measurement]:
    """Run the plan, each run ``repeats`` times in fresh processes."""
    out: list[Measurement] = []
    eightbit_missing: Result | None = None
    histogram_need = baselines.ort_histogram_memory_mb(model, VERSUS_ORT)
    for m in _plan(with_ort):
        if m.tool == "eightbit" and eightbit_missing is not None:
            # One "not importable" answer is enough; don't start more interpreters for it.
            out.append(replace(m, result=eightbit_missing))
            continue
        needs_memory = m.tool == "ONNX Runtime" and m.method != "minmax"
        if needs_memory and histogram_need > metrics.available_memory_mb():
            error = f"skipped: needs ~{histogram_need / 1024:.1f} GB of free memory"
            out.append(replace(m, result=Result(ok=False, error=error)))
            continue
        print(f"[calibration] {m.tool} {m.method} {m.samples} samples x{repeats} ...", flush=True)
        result = _best([run_in_subprocess(_task(m, model, pool)) for _ in range(repeats)])
        if m.tool == "eightbit" and result.unavailable:
            eightbit_missing = result
        out.append(replace(m, result=result))
    return out


def _find(runs: list[Measurement], tool: str, method: str, samples: int) -> Result | None:
    for m in runs:
        if (m.tool, m.method, m.samples) == (tool, method, samples) and m.result.ok:
            return m.result
    return None


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def targets_table(runs: list[Measurement]) -> Table:
    table = Table(
        f"Calibration targets (ResNet-18-style, 224x224 crops, batch 16, {THREADS} threads)",
        ["target", "method", "measured", "goal", "met"],
    )

    def add(target: str, method: str, value: float | None, goal: float, strict: bool) -> None:
        met = None if value is None else (value < goal if strict else value <= goal)
        table.add(target, method, value, ("< " if strict else "<= ") + f"{goal:g}", met)

    def seconds(tool: str, method: str, samples: int) -> float | None:
        r = _find(runs, tool, method, samples)
        return None if r is None else r.seconds

    def peak(tool: str, method: str, samples: int) -> float | None:
        r = _find(runs, tool, method, samples)
        return None if r is None else r.peak_rss_mb

    for method in EIGHTBIT_METHODS:
        ratio = _ratio(peak("eightbit", method, LARGE), peak("eightbit", method, SMALL))
        add(f"peak RSS {LARGE} / {SMALL} samples", method, ratio, 1.15, strict=False)
    for method in ("entropy", "percentile", "mse"):
        ratio = _ratio(seconds("eightbit", method, LARGE), seconds("eightbit", "minmax", LARGE))
        add(f"time / minmax time ({LARGE} samples)", method, ratio, 1.5, strict=False)
    inference = seconds("float inference", "", LARGE)
    for method in EIGHTBIT_METHODS:
        ratio = _ratio(seconds("eightbit", method, LARGE), inference)
        add(f"time / float ORT inference ({LARGE} samples)", method, ratio, 1.5, strict=False)
    for method in baselines.ORT_METHODS:
        ratio = _ratio(
            seconds("eightbit", method, VERSUS_ORT), seconds("ONNX Runtime", method, VERSUS_ORT)
        )
        add(f"time / ORT calibration time ({VERSUS_ORT} samples)", method, ratio, 1.0, strict=True)
        ratio = _ratio(
            peak("eightbit", method, VERSUS_ORT), peak("ONNX Runtime", method, VERSUS_ORT)
        )
        add(f"peak RSS / ORT peak RSS ({VERSUS_ORT} samples)", method, ratio, 1.0, strict=True)
    if any(row[2] == "—" for row in table.rows):
        table.notes.append("— = not measured: eightbit API not available, or a run failed (below)")
    return table


def runs_table(runs: list[Measurement]) -> Table:
    table = Table(
        "Calibration runs (each in a fresh process)",
        ["tool", "method", "samples", "seconds", "peak RSS MB", "RSS before MB", "status"],
    )
    errors: set[str] = set()
    for m in runs:
        r = m.result
        status = "ok" if r.ok else ("not available" if r.unavailable else "failed")
        table.add(
            m.tool, m.method or "—", m.samples, r.seconds, r.peak_rss_mb, r.start_rss_mb, status
        )
        if r.error and r.error not in errors:
            errors.add(r.error)
            table.notes.append(f"{m.tool} {m.method} {m.samples}: {r.error}")
    table.notes.append(
        f"each run {REPEATS} times in fresh processes; seconds = the fastest, peak RSS = the "
        "largest VmHWM, the worker's own peak (interpreter, libraries, model, data); 'RSS "
        "before' = RSS when the "
        "timed call started"
    )
    return table


def run(with_ort: bool = True) -> list[Table]:
    model = models.resnet18_style()
    pool = images.sample_pool(LARGE)
    runs = measure(model, pool, with_ort)
    return [targets_table(runs), runs_table(runs)]
