"""Section "memory": peak RSS and wall time of whole quantization commands on big models (issue 20).

Each command runs in a fresh process and is measured as a user would see it: wall time from
start to exit (interpreter start-up and imports included) and the process's peak resident
set size (``wait4``'s ``ru_maxrss``, taken by the launcher ``benchmarks.peak``). The tools:

* ``eightbit quantize`` (the CLI), ``--preset fast`` and the default, on an .npy of
  ``CALIBRATION + CHECK`` samples: by default the last ``CHECK`` are held back for the
  quick check, so ``CALIBRATION`` calibrate, as for the others;
* ONNX Runtime ``quantize_static`` after ``quant_pre_process`` (MinMax, per-channel int8
  weights, uint8 activations: ``benchmarks.baselines.ort_quantize``) on ``CALIBRATION``;
* NNCF ``nncf.quantize`` (its defaults) on ``CALIBRATION`` samples.

Models: VGG-16 (``benchmarks.vgg``, 528 MB of float weights, 224x224 images), then stacks
of Gemm layers (``benchmarks.big_models``, in ONNX external data) at three sizes up to
~2.5 GB, for how eightbit's memory and time grow with the model; ORT and NNCF run on
VGG-16 and on the largest stack only, to keep the section within a few minutes. The goals
(issue 20): eightbit's default peak <= 1.5x the model file + 1 GB, and below ORT's and
NNCF's; default time <= ORT's; fast <= 0.8x ORT's.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks import big_models, vgg
from benchmarks.models import WORK_DIR
from benchmarks.report import Table
from benchmarks.worker import Task

ROOT = Path(__file__).resolve().parent.parent
WORK = WORK_DIR / "memory"
CALIBRATION, CHECK = 64, 16
TIMEOUT = 900.0
MB = 2**20


@dataclass(frozen=True)
class Measured:
    seconds: float
    peak_mb: float
    error: str = ""
    # User + system CPU seconds of the process: on a shared machine, what its wall time
    # would be nearer to on an idle one (compare with the other tools' on the same load).
    cpu_seconds: float = float("nan")


def measure(command: list[str], timeout: float = TIMEOUT) -> Measured:
    """Wall time and peak RSS of ``command`` run to its end in a fresh process, started from
    a small launcher (``benchmarks.peak``) so that its peak is its own, not this process's."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]))
    with tempfile.TemporaryDirectory() as folder:
        figures_file = Path(folder) / "figures.json"
        launched = [sys.executable, "-m", "benchmarks.peak", str(figures_file), "--", *command]
        started = time.perf_counter()
        process = subprocess.Popen(
            launched, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=True,  # a time-out stops the command with its launcher
        )  # fmt: skip
        try:
            _, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            return Measured(float("nan"), float("nan"), f"timed out after {timeout:.0f} s")
        seconds = time.perf_counter() - started
        if not figures_file.exists():
            return Measured(seconds, float("nan"), f"launcher failed: {_tail(stderr)}")
        figures = json.loads(figures_file.read_text(encoding="utf-8"))
    peak = figures["peak_kib"] / 1024  # KiB on Linux
    cpu = figures["cpu_seconds"]
    if figures["code"] != 0:
        return Measured(seconds, peak, f"exit {figures['code']}: {_tail(stderr)}", cpu)
    return Measured(seconds, peak, cpu_seconds=cpu)


def _tail(stderr: bytes) -> str:
    return " | ".join(stderr.decode(errors="replace").strip().splitlines()[-2:])


def eightbit(model: Path, data: Path, preset: str) -> Measured:
    output = WORK / f"{model.stem}_eightbit_{preset}.onnx"
    command = [sys.executable, "-m", "eightbit", "quantize", str(model), "--data", str(data)]
    return measure([*command, "-o", str(output), "--preset", preset])


def digest(model: Path) -> str:
    """The first 12 hex digits of the sha256 of ``model`` and its external data, if any: a
    change that only removes copies must leave it as it was."""
    hashed = hashlib.sha256()
    for part in (model, model.with_name(model.name + ".data")):
        if part.exists():
            with part.open("rb") as file:
                for block in iter(lambda: file.read(2**24), b""):
                    hashed.update(block)
    return hashed.hexdigest()[:12]


def baseline(kind: str, model: Path, data: Path) -> Measured:
    output = WORK / f"{model.stem}_{kind}.onnx"
    task = Task(kind, str(model), str(data), CALIBRATION, method="minmax", preprocess=True,
                output=str(output))  # fmt: skip
    measured = measure([sys.executable, "-m", "benchmarks.worker", json.dumps(asdict(task))])
    # The worker prints its own verdict; a failed task still exits 0.
    return measured if output.exists() or measured.error else _failed(measured, kind)


def _failed(measured: Measured, kind: str) -> Measured:
    return Measured(
        measured.seconds, measured.peak_mb, f"{kind} wrote no model", measured.cpu_seconds
    )


def file_mb(model: Path) -> float:
    """The model's size on disk, its external data included."""
    data = model.with_name(model.name + ".data")
    return (model.stat().st_size + (data.stat().st_size if data.exists() else 0)) / MB


def _cell(value: float, error: str) -> object:
    return f"failed ({error[:80]})" if error else value


def run() -> list[Table]:
    WORK.mkdir(parents=True, exist_ok=True)
    for stale in WORK.glob("*.onnx*"):
        stale.unlink()
    cases = [(vgg.vgg16(), vgg.calibration_images(CALIBRATION + CHECK))]
    cases += [big_models.gemm_stack(size) for size in big_models.SIZES_MB]
    table = Table(
        "Memory: peak RSS and wall time of whole commands on big models (issue 20)",
        ["model", "file MB", "tool", "peak RSS MB", "x file", "seconds", "CPU s", "goal", "sha256"],
    )
    largest = cases[-1][0]
    for model, data in cases:
        size = file_mb(model)
        results = {
            "eightbit fast": eightbit(model, data, "fast"),
            "eightbit default": eightbit(model, data, "default"),
        }
        if model in (cases[0][0], largest):  # the baselines on VGG-16 and the largest only
            calibration = _calibration_file(data)
            results["ORT quantize_static"] = baseline("ort_quantize", model, calibration)
            results["NNCF"] = baseline("nncf_quantize", model, calibration)
        goals = _goals(size, results)
        for tool, measured in results.items():
            written = WORK / f"{model.stem}_{tool.replace('eightbit ', 'eightbit_')}.onnx"
            table.add(
                model.stem, size, tool, _cell(measured.peak_mb, measured.error),
                measured.peak_mb / size, measured.seconds, measured.cpu_seconds,
                goals.get(tool, ""),
                digest(written) if tool.startswith("eightbit") and written.exists() else "",
            )  # fmt: skip
        for stale in WORK.glob("*.onnx*"):
            stale.unlink()  # the next model's outputs need the disk
    table.notes += [
        f"eightbit reads {CALIBRATION + CHECK} samples: {CALIBRATION} calibrate, the last {CHECK} "
        f"are held back for its quick check (its default); ORT and NNCF read {CALIBRATION}.",
        "Peak RSS: the process's maximum resident set (wait4 ru_maxrss, taken by a small "
        "launcher so that the bench's own peak does not count), imports included; "
        "seconds: wall time of the whole command; CPU s: its user + system CPU time "
        "(wait4), less moved by other work on the machine than wall time. One run each, on a "
        "machine shared with other work: rerun on an idle machine for timing figures.",
        "Goals: default peak <= 1.5x file + 1 GB and below ORT's and NNCF's; default time <= "
        "ORT's; fast <= 0.8x ORT's.",
        "sha256: of eightbit's int8 model (and its .data), to tell that a change which only "
        "removes copies left the model as it was.",
    ]
    return [table]


def _calibration_file(data: Path) -> Path:
    """The first ``CALIBRATION`` samples of ``data`` (the baselines read them all)."""
    import numpy as np

    target = data.with_name(f"{data.stem}_{CALIBRATION}.npy")
    if not target.exists():
        np.save(target, np.load(data, mmap_mode="r")[:CALIBRATION])
    return target


def _goals(size_mb: float, results: dict[str, Measured]) -> dict[str, str]:
    default, fast = results["eightbit default"], results["eightbit fast"]
    missing = Measured(float("nan"), float("nan"), "not run")
    ort, nncf = results.get("ORT quantize_static", missing), results.get("NNCF", missing)
    bound = 1.5 * size_mb + 1024
    memory = [f"peak <= {bound:.0f} MB: {_yes(default.peak_mb <= bound)}"]
    for name, other in (("ORT", ort), ("NNCF", nncf)):
        if not other.error:
            memory.append(f"below {name}: {_yes(default.peak_mb < other.peak_mb)}")
    goals = {"eightbit default": "; ".join(memory)}
    if not ort.error:
        goals["eightbit default"] += (
            f"; time <= ORT: {_yes(default.seconds <= ort.seconds)} "
            f"(CPU: {_yes(default.cpu_seconds <= ort.cpu_seconds)})"
        )
        goals["eightbit fast"] = (
            f"time <= 0.8x ORT: {_yes(fast.seconds <= 0.8 * ort.seconds)} "
            f"(CPU: {_yes(fast.cpu_seconds <= 0.8 * ort.cpu_seconds)})"
        )
    return goals


def _yes(met: bool) -> str:
    return "met" if met else "missed"
