"""Section "ray": eightbit on a local Ray instance vs one process (docs/distributed.md).

Three targets (issue 19), each on MobileNetV2 and the benchmark's ImageNet-style crops:

- validate 2,000 samples (outputs only: ``layers=False``): 2 Ray workers vs one process
  (speedup >= 1.7x), 1 Ray worker vs one process on one thread (overhead <= 10%); the JSON
  must be the same bytes;
- calibrate 256 and 2,048 samples on 2 workers: the peak RSS of a worker (``VmHWM``) must stay
  flat in the samples (<= 1.15x), and the ranges file must be the bytes of one process;
- ``--min-sqnr`` fallback (``quantize(improve=preset("fast", min_sqnr=...), ray=...)``): 2
  workers vs 1 (speedup >= 1.6x), the same nodes returned.

Each configuration starts its own Ray instance (127.0.0.1, ``num_cpus`` = workers) so that the
workers' peak memory is theirs alone; Ray's start-up (~8 s, the workers' imports of eightbit
included) is not counted.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import eightbit
from benchmarks import images, models
from benchmarks.peak import vm_hwm_mb
from benchmarks.report import Table
from eightbit.analysis.validate import RunOptions, validate
from eightbit.calibrate import CalibrationConfig, calibrate
from eightbit.distributed import calibrate_on_ray, validate_on_ray
from eightbit.distributed.cluster import connect
from eightbit.improve.presets import preset

VALIDATE_SAMPLES = 2000
CALIBRATE_SAMPLES = (256, 2048)
POOL = 2048
MIN_SQNR = 25.0  # fewer nodes than 30 (59 there): the section stays a few minutes
WORK = models.WORK_DIR / "ray"


def _timed(run: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = run()
    return result, time.perf_counter() - started


def _with_ray(cpus: int, run: Callable[[], Any]) -> tuple[Any, float, float]:
    """``run`` on a fresh local Ray of ``cpus`` workers: result, seconds, largest worker
    peak RSS in MB."""
    ray = connect("local", cpus=cpus)
    try:
        ray.get([ray.remote(lambda: None).remote() for _ in range(cpus)])  # workers up
        result, seconds = _timed(run)
        return result, seconds, _worker_peak_mb()
    finally:
        ray.shutdown()


def _worker_peak_mb() -> float:
    """The largest VmHWM (peak resident set) of the workers of the Ray this process started
    (its descendants titled ``ray::IDLE`` or ``ray::<task>``; Ray's agents excluded)."""
    import psutil

    peak = 0.0
    for process in psutil.Process().children(recursive=True):
        try:
            title = " ".join(process.cmdline())
        except psutil.Error:
            continue
        if not title.startswith("ray::") or title.split()[0].endswith("Agent"):
            continue
        own = vm_hwm_mb(process.pid)
        if own is not None:
            peak = max(peak, own)
    return peak


def _int8_model(float_path: Path) -> Path:
    path = WORK / "mobilenet_v2.int8.onnx"
    if not path.exists():
        WORK.mkdir(parents=True, exist_ok=True)
        calibration = np.asarray(images.calibration_set())
        eightbit.quantize(str(float_path), calibration, improve="fast").save(path)
    return path


def validate_table(float_path: Path, pool: Path) -> Table:
    int8_path = _int8_model(float_path)
    options = RunOptions(samples=VALIDATE_SAMPLES)
    one_thread = RunOptions(samples=VALIDATE_SAMPLES, threads=1)
    table = Table(
        f"validate {VALIDATE_SAMPLES} MobileNetV2 samples (outputs only) on Ray",
        ["run", "seconds", "samples/s", "vs one process", "JSON identical"],
        notes=[
            "targets: 2 workers >= 1.7x one process; 1 worker <= 10% over one process on one "
            "thread (a worker runs ONNX Runtime on one thread)",
            "Ray start-up not counted (the workers import eightbit's task code as they "
            "start: cluster.warm_worker); each task opens its sessions once per shard",
        ],
    )

    def alone(run_options: RunOptions) -> str:
        return json.dumps(
            validate(float_path, int8_path, pool, layers=False, options=run_options).to_dict()
        )

    def on_ray() -> str:
        result = validate_on_ray(float_path, int8_path, pool, layers=False, options=options)
        return json.dumps(result.to_dict())

    print("[ray] validate: one process ...", flush=True)
    alone(RunOptions(samples=32))  # warm: the data's pages, ONNX Runtime's first runs
    reference, base = _timed(lambda: alone(options))
    _, base_one = _timed(lambda: alone(one_thread))
    print("[ray] validate: 1 and 2 workers ...", flush=True)
    one, one_seconds, _ = _with_ray(1, on_ray)
    two, two_seconds, _ = _with_ray(2, on_ray)
    table.add("one process (ONNX Runtime's threads)", base, VALIDATE_SAMPLES / base, 1.0, "—")
    table.add("one process, 1 thread", base_one, VALIDATE_SAMPLES / base_one, base / base_one, "—")
    table.add(
        "Ray, 1 worker", one_seconds, VALIDATE_SAMPLES / one_seconds, base / one_seconds,
        one == reference,
    )  # fmt: skip
    table.add(
        "Ray, 2 workers", two_seconds, VALIDATE_SAMPLES / two_seconds, base / two_seconds,
        two == reference,
    )  # fmt: skip
    table.notes.append(
        f"1 worker over one process on 1 thread: {100 * (one_seconds / base_one - 1):+.1f}%; "
        f"2 workers: {base / two_seconds:.2f}x one process, {base_one / two_seconds:.2f}x one "
        "process on 1 thread"
    )
    return table


def _ranges_bytes(ranges: Any, folder: Path) -> tuple[bytes, bytes]:
    folder.mkdir(parents=True)
    ranges.save(folder / "r.json")
    return (folder / "r.json").read_bytes(), (folder / "r.hist.npz").read_bytes()


def calibrate_table(float_path: Path, pool: Path) -> Table:
    table = Table(
        "calibrate MobileNetV2 on 2 Ray workers: a worker's peak memory vs samples",
        ["samples", "seconds (Ray)", "seconds (one process)", "worker peak RSS MB", "identical"],
        notes=[
            f"target: worker peak RSS (VmHWM of every Ray worker, largest) at "
            f"{CALIBRATE_SAMPLES[1]:,} samples <= 1.15x at {CALIBRATE_SAMPLES[0]}; ranges "
            "JSON and histograms the bytes of one process",
        ],
    )
    peaks = []
    with tempfile.TemporaryDirectory() as scratch:
        for samples in CALIBRATE_SAMPLES:
            config = CalibrationConfig(samples=samples)
            print(f"[ray] calibrate {samples} samples ...", flush=True)
            alone, alone_seconds = _timed(lambda c=config: calibrate(float_path, pool, c))
            on_ray, seconds, peak = _with_ray(
                2, lambda c=config: calibrate_on_ray(float_path, pool, c)
            )
            same = _ranges_bytes(alone, Path(scratch) / f"a{samples}") == _ranges_bytes(
                on_ray, Path(scratch) / f"r{samples}"
            )
            peaks.append(peak)
            table.add(samples, seconds, alone_seconds, peak, same)
    table.notes.append(f"peak at {CALIBRATE_SAMPLES[1]} / at {CALIBRATE_SAMPLES[0]}: "
                       f"{peaks[1] / peaks[0]:.3f}x")  # fmt: skip
    return table


def _returned(result: Any) -> tuple[str, ...]:
    for step in result.plan.steps:
        if step.name == "fallback":
            return tuple(layer.layer for layer in step.layers)
    return ()


def fallback_table(float_path: Path) -> Table:
    calibration = np.asarray(images.calibration_set())
    improve = preset("fast", min_sqnr=MIN_SQNR)
    table = Table(
        f"--min-sqnr {MIN_SQNR:g} fallback on MobileNetV2 (quantize, fast preset) on Ray",
        ["workers", "seconds", "speedup", "nodes returned", "same nodes"],
        notes=[
            "target: 2 workers >= 1.6x 1 worker, the same nodes; calibration and the "
            "candidates' scoring run on Ray, the rebuilds and the search on the driver",
        ],
    )

    def quantize() -> Any:
        return eightbit.quantize(str(float_path), calibration, improve=improve, ray="local")

    runs = []
    for cpus in (1, 2):
        print(f"[ray] fallback on {cpus} worker(s) ...", flush=True)
        result, seconds, _ = _with_ray(cpus, quantize)
        runs.append((_returned(result), seconds))
    for cpus, (returned, seconds) in zip((1, 2), runs, strict=True):
        table.add(cpus, seconds, runs[0][1] / seconds, len(returned), returned == runs[0][0])
    return table


def run() -> list[Table]:
    float_path = models.mobilenet_v2()
    pool = images.sample_pool(POOL)
    note = "measured while other jobs shared the machine's 2 cores unless rerun idle"
    tables = [
        validate_table(float_path, pool),
        calibrate_table(float_path, pool),
        fallback_table(float_path),
    ]
    for table in tables:
        table.notes.append(note)
    return tables
