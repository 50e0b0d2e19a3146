"""The accuracy-aware fallback on the zoo's largest model (issue 13, item 4).

``eightbit quantize --min-sqnr`` on the zoo model with the most nodes: its wall time against
the plain default quantization of the same model, how many nodes it returned to float, what
its step reported (the number of rebuilds), and the SQNR reached on the evaluation samples.
The budget is set ``MARGIN_DB`` above what the plain model reaches on the calibration samples
(where the fallback judges), so the search has work to do: a budget that already holds costs
no rebuild and says nothing about the search. Opt-in (``--zoo-fallback``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx

from benchmarks import metrics
from benchmarks.report import Table
from benchmarks.worker import Task, run_in_subprocess
from benchmarks.zoo import measures
from benchmarks.zoo.catalog import ZOO
from benchmarks.zoo.spec import ZOO_DIR, ZooModel, data_paths

MARGIN_DB = 3.0
TIMEOUT = 1800.0
THREADS = 2


def largest() -> ZooModel:
    """The installed zoo model with the most nodes."""
    ready = [m for m in ZOO if not m.missing()]
    return max(
        ready, key=lambda m: len(onnx.load(str(m.build()), load_external_data=False).graph.node)
    )


def _task(model: ZooModel, count: int, min_sqnr: float | None) -> Task:
    suffix = "plain" if min_sqnr is None else f"sqnr{min_sqnr:g}"
    (ZOO_DIR / "quantized").mkdir(parents=True, exist_ok=True)  # when run alone
    return Task(
        "eightbit_quantize",
        str(model.build()),
        str(data_paths(model.key)[0]),
        count,
        method="percentile",  # eightbit's default calibration method
        output=str(ZOO_DIR / "quantized" / f"{model.key}_fallback_{suffix}.onnx"),
        threads=THREADS,
        min_sqnr=min_sqnr,
    )


def _fallback_step(output: str) -> tuple[int, str]:
    plan = json.loads(Path(output).with_suffix(".plan.json").read_text())
    steps = [s for s in plan["steps"] if s["name"] == "fallback"]
    returned = sum(len(s["layers"]) for s in steps)
    notes = "; ".join(n for s in steps for n in s.get("notes", []))
    return returned, notes or "—"


def run() -> Table:
    model = largest()
    calibration, evaluation = model.data()
    nodes = len(onnx.load(str(model.build()), load_external_data=False).graph.node)
    table = Table(
        f"Zoo: accuracy-aware fallback on the largest model, {model.name} ({nodes} nodes)",
        ["setting", "quantize s", "x plain", "nodes returned", "SQNR dB", "step notes"],
        notes=[
            f"{len(calibration)} calibration / {len(evaluation)} evaluation samples; preset "
            f"default, {THREADS} threads; time-out {TIMEOUT / 60:.0f} min; goal (issue 13): "
            "<= 5x the plain quantization"
        ],
    )
    reference = metrics.run_batches(model.build(), evaluation, threads=THREADS)
    print(f"[zoo] fallback: {model.name} default ...", flush=True)
    task = _task(model, len(calibration), None)
    plain = run_in_subprocess(task, TIMEOUT)
    if not plain.ok:
        table.add("default", "failed", None, None, None, plain.error[:200])
        return table
    candidate = metrics.run_batches(task.output, evaluation, threads=THREADS)
    table.add("default", plain.seconds, 1.0, 0, measures.sqnr_db(reference, candidate), "—")
    min_sqnr = round(_calibration_sqnr(model, calibration, task.output) + MARGIN_DB, 1)
    table.notes.append(
        f"--min-sqnr {min_sqnr:g}: {MARGIN_DB:g} dB above the plain model's SQNR on the "
        "calibration samples, where the fallback judges"
    )
    setting = f"default + --min-sqnr {min_sqnr:g}"
    print(f"[zoo] fallback: {model.name} {setting} ...", flush=True)
    task = _task(model, len(calibration), min_sqnr)
    result = run_in_subprocess(task, TIMEOUT)
    if not result.ok:
        table.add(setting, "failed", None, None, None, result.error[:200])
        return table
    candidate = metrics.run_batches(task.output, evaluation, threads=THREADS)
    returned, notes = _fallback_step(task.output)
    table.add(
        setting,
        result.seconds,
        result.seconds / plain.seconds,
        returned,
        measures.sqnr_db(reference, candidate),
        notes,
    )
    return table


def _calibration_sqnr(model: ZooModel, calibration: np.ndarray, int8: str) -> float:
    """The plain int8 model's output SQNR on the calibration samples."""
    reference = metrics.run_batches(model.build(), calibration, threads=THREADS)
    return measures.sqnr_db(reference, metrics.run_batches(int8, calibration, threads=THREADS))
