"""One measured task per fresh process: wall time of the task and the process's peak RSS.

A fresh interpreter per measurement keeps each peak-memory figure clean (nothing left over from
an earlier quantizer, no allocator caches) and isolates libraries that change global state
(NNCF's logging, ORT's default logger). The parent runs ``python -m benchmarks.worker TASK_JSON``
and reads the last line, ``RESULT {json}``.

Timing covers the task itself (model loading included), not interpreter start-up or imports,
which the worker does first.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import resource
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.peak import vm_hwm_mb

ROOT = Path(__file__).resolve().parent.parent
RESULT_PREFIX = "RESULT "
KINDS = (
    "ort_quantize",
    "nncf_quantize",
    "eightbit_quantize",
    "ort_calibrate",
    "eightbit_calibrate",
    "float_inference",
    "eightbit_default",
    "aimet_quantize",
    "aimet_qat",
)


@dataclass(frozen=True)
class Task:
    kind: str
    model: str
    data: str
    samples: int
    batch_size: int = 16
    method: str = ""
    preprocess: bool = False
    output: str = ""
    threads: int = 1
    preset: str = "default"  # eightbit's improvement steps (eightbit_quantize)
    min_sqnr: float | None = None  # eightbit's fallback budget (--min-sqnr), if any
    max_latency: float | None = None  # and its latency cap (--max-latency), if any
    steps: int = 0  # training steps (aimet_qat)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"'kind' must be one of {list(KINDS)} (got {self.kind!r})")


@dataclass
class Result:
    ok: bool
    seconds: float = float("nan")
    peak_rss_mb: float = float("nan")
    start_rss_mb: float = float("nan")
    unavailable: bool = False
    error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mb() -> float:
    """This process's own peak: ``VmHWM`` belongs to the memory map made at ``exec``, while
    ``ru_maxrss`` keeps the high-water mark of the process it was started from (the bench,
    through ``vfork``; see ``benchmarks.peak``)."""
    own = vm_hwm_mb()
    if own is not None:
        return own
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _preimport(kind: str) -> None:
    """Import the task's libraries before the clock starts (NNCF alone takes seconds)."""
    modules = ["numpy", "onnx", "onnxruntime"]
    if kind in ("ort_quantize", "ort_calibrate"):
        modules.append("onnxruntime.quantization")
    elif kind == "nncf_quantize":
        modules.append("nncf")
    elif kind.startswith("eightbit_"):
        modules.append("eightbit.calibrate")
    elif kind == "aimet_quantize":
        modules.append("aimet_onnx.quantsim")
    elif kind == "aimet_qat":
        modules.extend(["torch", "aimet_torch.quantsim"])
    for module in modules:
        with contextlib.suppress(ImportError):  # the task itself reports what is missing
            importlib.import_module(module)


def _float_inference(task: Task, batches: Any) -> None:
    from benchmarks.metrics import session

    sess = session(task.model, task.threads)
    name = sess.get_inputs()[0].name  # type: ignore[attr-defined]
    for batch in batches:
        sess.run(None, {name: batch})  # type: ignore[attr-defined]


def execute(task: Task) -> Result:
    """Run ``task`` in this process and measure it."""
    from benchmarks import adapters, baselines
    from benchmarks.feeds import NpyBatches

    _preimport(task.kind)
    batches = NpyBatches(task.data, task.samples, task.batch_size)
    model, output = Path(task.model), Path(task.output) if task.output else None
    start_rss = _rss_mb()
    start = time.perf_counter()
    extra: dict[str, Any] = {}
    try:
        if task.kind == "ort_quantize":
            assert output is not None
            baselines.ort_quantize(model, output, batches, task.method, task.preprocess)
        elif task.kind == "nncf_quantize":
            assert output is not None
            baselines.nncf_quantize(model, output, batches, task.preprocess)
        elif task.kind == "eightbit_quantize":
            assert output is not None
            extra["steps"] = adapters.eightbit_quantize(
                model,
                output,
                batches,
                task.method,
                task.threads,
                task.preset,
                task.min_sqnr,
                task.max_latency,
            )
        elif task.kind == "eightbit_default":
            assert output is not None
            extra = adapters.eightbit_default(model, output, batches, task.threads)
        elif task.kind == "aimet_quantize":
            assert output is not None
            from benchmarks.zoo import aimet

            aimet.quantize(model, output, batches)
        elif task.kind == "aimet_qat":
            assert output is not None
            from benchmarks import aimet_qat

            aimet_qat.qat(model, output, batches, task.steps, task.threads)
        elif task.kind == "ort_calibrate":
            baselines.ort_calibrate(model, batches, task.method)
        elif task.kind == "eightbit_calibrate":
            adapters.eightbit_calibrate(model, batches, task.method, task.samples, task.threads)
        else:
            _float_inference(task, batches)
    except adapters.Unavailable as exc:
        return Result(ok=False, unavailable=True, error=str(exc))
    except ImportError as exc:  # e.g. NNCF not installed: `make bench` installs it
        return Result(ok=False, unavailable=True, error=f"{type(exc).__name__}: {exc}")
    seconds = time.perf_counter() - start
    return Result(
        ok=True,
        seconds=seconds,
        peak_rss_mb=_peak_rss_mb(),
        start_rss_mb=start_rss,
        extra=extra,
    )


def run_in_subprocess(task: Task, timeout: float = 1200.0, python: str | None = None) -> Result:
    """Run ``task`` in a fresh interpreter (``python``, default this one) and return its
    measurements."""
    cmd = [python or sys.executable, "-m", "benchmarks.worker", json.dumps(asdict(task))]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return Result(ok=False, error=f"timed out after {timeout:.0f} s")
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return Result(**json.loads(line[len(RESULT_PREFIX) :]))
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-6:]
    return Result(ok=False, error=f"worker exited {proc.returncode}: " + " | ".join(tail))


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m benchmarks.worker TASK_JSON", file=sys.stderr)
        return 2
    task = Task(**json.loads(argv[0]))
    try:
        result = execute(task)
    except Exception as exc:
        traceback.print_exc()
        result = Result(ok=False, error=f"{type(exc).__name__}: {exc}")
    print(RESULT_PREFIX + json.dumps(asdict(result)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
