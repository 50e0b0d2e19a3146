"""Section "zoo": eightbit's default against ORT, NNCF and AIMET on every zoo model.

For each model: quantize with every tool in a fresh process (same float model, same
calibration samples), run float and int8 on the evaluation samples with ONNX Runtime, and
report the family's metric, the output SQNR, the worst-slice SQNR along the output's
channel/feature axis, latency int8/fp32 (batch 1, 1 thread, all models' runs interleaved)
and file size. A second table checks issue 13's goals for eightbit against the best other
tool on each model.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from benchmarks import metrics
from benchmarks.report import Table
from benchmarks.worker import Result, Task, run_in_subprocess
from benchmarks.zoo import aimet, measures
from benchmarks.zoo.catalog import ZOO
from benchmarks.zoo.spec import ZOO_DIR, ZooModel, data_paths

TOOLS = ("eightbit", "ONNX Runtime", "NNCF", "AIMET")
SETTINGS = {
    "eightbit": "default (eightbit.quantize)",
    "ONNX Runtime": "quantize_static MinMax + pre-process",
    "NNCF": "nncf.quantize default",
    "AIMET": "BN fold + CLE + tf_enhanced, per-channel",
}
EVAL_THREADS = 2
# The goal compares int8 models of close speed at 5%: 30 runs let a burst of load on a shared
# machine move one tool's median by as much (YOLOX: 7% in one run, 2-3% in three reruns).
LATENCY_RUNS = 60
# Unfused Q/DQ in float is several times slower than the int8 model: its SQNR is read on the
# first samples only (a diagnostic of the kernels, not a figure the goals use).
QDQ_FLOAT_SAMPLES = 48
TASK_TIMEOUT = 900.0
# Issue 13's goals for eightbit's default, against the best of the other tools.
SQNR_MARGIN_DB, WORST_SLICE_FLOOR_DB, LATENCY_SLACK = 1.0, 10.0, 1.05


@dataclass
class Measured:
    tool: str
    result: Result
    output: Path
    agreement: float = float("nan")
    sqnr: float = float("nan")
    qdq_sqnr: float = float("nan")  # the same QDQ model run in float (no int8 kernels)
    worst_slice: float = float("nan")
    latency: float = float("nan")
    size: float = float("nan")
    notes: list[str] = field(default_factory=list)


def _task(kind: str, model: ZooModel, path: Path, count: int, **options: object) -> Task:
    calibration, _ = data_paths(model.key)
    output = ZOO_DIR / "quantized" / f"{model.key}_{kind}.onnx"
    output.parent.mkdir(parents=True, exist_ok=True)
    return Task(kind, str(path), str(calibration), count, output=str(output), **options)  # type: ignore[arg-type]


def _quantize(
    tool: str, model: ZooModel, path: Path, count: int, aimet_error: str | None, reuse: bool
) -> Measured:
    if tool == "eightbit":
        task = _task("eightbit_default", model, path, count, threads=EVAL_THREADS)
    elif tool == "ONNX Runtime":
        task = _task(
            "ort_quantize", model, path, count, batch_size=1, method="minmax", preprocess=True
        )
    elif tool == "NNCF":
        task = _task("nncf_quantize", model, path, count, batch_size=1)
    else:
        task = _task("aimet_quantize", model, path, count)
        if aimet_error:
            return Measured(tool, Result(ok=False, unavailable=True, error=aimet_error), Path())
    output = Path(task.output)
    if reuse and output.exists():
        return _reused(tool, output)
    print(f"[zoo] {model.name}: {tool} ...", flush=True)
    python = str(aimet.PYTHON) if tool == "AIMET" else None
    measured = Measured(tool, run_in_subprocess(task, TASK_TIMEOUT, python), Path(task.output))
    if tool == "ONNX Runtime" and not measured.result.ok:
        # What a user does next when ORT's pre-processing fails: quantize without it.
        print(f"[zoo] {model.name}: {tool} without pre-processing ...", flush=True)
        error = measured.result.error[:200]
        task = replace(task, preprocess=False)
        measured = Measured(tool, run_in_subprocess(task, TASK_TIMEOUT), Path(task.output))
        measured.notes.append(f"pre-processing failed ({error}); quantized without it")
    if measured.result.ok:
        record = {"result": asdict(measured.result), "notes": measured.notes}
        measured.output.with_suffix(".result.json").write_text(json.dumps(record))
    return measured


def _reused(tool: str, output: Path) -> Measured:
    """A quantized model from an earlier run (``--zoo-reuse``), with that run's measurements
    when they were recorded beside it."""
    record_path = output.with_suffix(".result.json")
    if not record_path.exists():
        return Measured(tool, Result(ok=True), output, notes=["reused; quantize s not recorded"])
    record = json.loads(record_path.read_text())
    return Measured(tool, Result(**record["result"]), output, notes=[*record["notes"], "reused"])


def _run_qdq_in_float(path: Path, data: np.ndarray) -> np.ndarray:
    """The QDQ model with ONNX Runtime's graph optimizations off: every Q/DQ pair runs as float
    arithmetic, so the result is the quantization itself, free of the CPU's int8 kernels
    (without VNNI, ORT's u8s8 kernels saturate int16 pair sums: see benchmarks/README.md)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = EVAL_THREADS
    options.log_severity_level = 3
    sess = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    batches = [sess.run(None, {name: data[i : i + 16]})[0] for i in range(0, len(data), 16)]
    return np.concatenate(batches)


def _evaluate(model: ZooModel, path: Path, rows: list[Measured], evaluation: np.ndarray) -> None:
    reference = metrics.run_batches(path, evaluation, threads=EVAL_THREADS)
    done = [m for m in rows if m.result.ok]
    for m in done:
        try:
            candidate = metrics.run_batches(m.output, evaluation, threads=EVAL_THREADS)
            m.agreement = model.metric(reference, candidate)
            m.sqnr = measures.sqnr_db(reference, candidate)
            few = evaluation[:QDQ_FLOAT_SAMPLES]
            m.qdq_sqnr = measures.sqnr_db(reference[: len(few)], _run_qdq_in_float(m.output, few))
            m.worst_slice = measures.worst_slice_sqnr_db(
                reference, candidate, model.slice_axis, model.predicted_slices
            )
            m.size = metrics.file_size(m.output) / metrics.file_size(path)
        except Exception as exc:  # an int8 model ORT cannot run is a result, not a crash
            m.result = Result(ok=False, error=f"evaluation: {type(exc).__name__}: {exc}")
    timed = [m for m in done if m.result.ok]
    if timed:
        runs = metrics.interleaved_latency_ms(
            [path, *(m.output for m in timed)], evaluation[:1], runs=LATENCY_RUNS
        )
        for m, ms in zip(timed, runs[1:], strict=True):
            m.latency = ms / runs[0]


def _cpu_note() -> str:
    """Whether this CPU has int8 dot-product instructions: without VNNI, ONNX Runtime's u8s8
    kernels (uint8 activations x int8 weights) sum pairs of products in saturating int16."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next(
                (line.split(":", 1)[1].split() for line in f if line.startswith("flags")), []
            )
    except OSError:
        return "CPU flags unknown"
    vnni = [flag for flag in flags if "vnni" in flag]
    if vnni:
        return f"this CPU has {', '.join(sorted(vnni))}: int8 kernels and QDQ in float should agree"
    widest = "avx512bw" if "avx512bw" in flags else "avx2" if "avx2" in flags else "no avx2"
    return (
        f"this CPU has {widest} and no VNNI: ORT's u8s8 int8 kernels can saturate, so the "
        "first SQNR can be far below this one"
    )


def _check_note(model: ZooModel, rows: list[Measured]) -> str | None:
    """What eightbit's own quick check said, to set beside what the zoo measured."""
    eightbit = next((m for m in rows if m.tool == "eightbit" and m.result.ok), None)
    check = eightbit.result.extra.get("check") if eightbit else None
    if not check:
        return None
    outputs = ", ".join(
        f"{o['name']} SQNR {o['sqnr_db']:.1f} dB"
        + ("" if o["top1_agreement"] is None else f" top-1 {o['top1_agreement']:.3f}")
        for o in check["outputs"]
    )
    samples = check["samples"]
    return f"{model.name}: eightbit's quick check ({samples} held-back samples) said {outputs}"


def run(
    only_tools: set[str] | None = None,
    only_models: set[str] | None = None,
    reuse: bool = False,
) -> list[Table]:
    tools = [t for t in TOOLS if not only_tools or t in only_tools]
    aimet_error = aimet.ensure_venv() if "AIMET" in tools else None
    table = Table(
        "Zoo: real models of other families, every tool's default, one run",
        [
            "model",
            "tool",
            "metric",
            "agreement",
            "SQNR dB",
            "SQNR dB, QDQ in float",
            "worst slice dB",
            "latency int8/fp32",
            "size int8/fp32",
            "quantize s",
        ],
        notes=[
            f"settings: {'; '.join(f'{t}: {SETTINGS[t]}' for t in tools)}",
            f"latency: batch 1, 1 intra-op thread, median of {LATENCY_RUNS} runs, every "
            "model's runs interleaved with the fp32 model's; size: the .onnx files",
            "worst slice: the lowest SQNR of one channel/feature of the output (the axis "
            "each model's row names in benchmarks/README.md); <= 0 dB is a collapse",
            "SQNR, QDQ in float: the same int8 model with ORT's graph optimizations off (Q/DQ "
            f"as float arithmetic; the first {QDQ_FLOAT_SAMPLES} evaluation samples): the "
            "quantization alone, without the CPU's int8 kernels; " + _cpu_note(),
        ],
    )
    if aimet_error:
        table.notes.append(f"AIMET not available: {aimet_error}")
    goals = Table(
        "Zoo: eightbit default against the best other tool (issue 13 goals)",
        [
            "model",
            "agreement (best other)",
            "SQNR dB (best other + 1)",
            "worst slice dB (>= 10)",
            "latency (<= 1.05x fastest other)",
            "all met",
        ],
    )
    for model in ZOO:
        if only_models and model.key not in only_models:
            continue
        missing = model.missing()
        if missing:
            table.notes.append(f"{model.name}: skipped, packages not installed: {missing}")
            continue
        path = model.build()
        calibration, evaluation = model.data()
        count = len(calibration)
        rows = [_quantize(t, model, path, count, aimet_error, reuse) for t in tools]
        _evaluate(model, path, rows, evaluation)
        table.notes.append(
            f"{model.name} ({model.family}; {model.source}): {len(calibration)} calibration / "
            f"{len(evaluation)} evaluation samples; metric: {model.metric_name}"
        )
        for m in rows:
            if not m.result.ok:
                status = "not available" if m.result.unavailable else "failed"
                table.add(model.name, m.tool, model.metric_name, status, *[None] * 6)
                table.notes.append(f"{model.name} {m.tool}: {status}: {m.result.error[:300]}")
                continue
            table.add(
                model.name,
                m.tool,
                model.metric_name,
                m.agreement,
                m.sqnr,
                m.qdq_sqnr,
                m.worst_slice,
                m.latency,
                m.size,
                m.result.seconds,
            )
            table.notes += [f"{model.name} {m.tool}: {note}" for note in m.notes]
        note = _check_note(model, rows)
        if note:
            table.notes.append(note)
        _goal_row(goals, model, rows)
    return [table, goals]


def _goal_row(goals: Table, model: ZooModel, rows: list[Measured]) -> None:
    ours = next((m for m in rows if m.tool == "eightbit"), None)
    others = [m for m in rows if m.tool != "eightbit" and m.result.ok]
    if ours is None or not ours.result.ok or not others:
        return
    best_agreement = max(m.agreement for m in others)
    best_sqnr = max(m.sqnr for m in others)
    fastest = min(m.latency for m in others)
    met = [
        ours.agreement >= best_agreement,
        ours.sqnr >= best_sqnr + SQNR_MARGIN_DB,
        ours.worst_slice >= WORST_SLICE_FLOOR_DB,
        ours.latency <= LATENCY_SLACK * fastest,
    ]
    goals.add(
        model.name,
        f"{_f(ours.agreement)} ({_f(best_agreement)}) {_yes(met[0])}",
        f"{_f(ours.sqnr)} ({_f(best_sqnr + SQNR_MARGIN_DB)}) {_yes(met[1])}",
        f"{_f(ours.worst_slice)} {_yes(met[2])}",
        f"{_f(ours.latency)} ({_f(LATENCY_SLACK * fastest)}) {_yes(met[3])}",
        _yes(all(met)),
    )


def _f(value: float) -> str:
    from benchmarks.report import fmt

    return fmt(value)


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"
