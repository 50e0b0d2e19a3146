"""Section "quantize": MobileNetV2 quantized by each tool, compared with the float model.

Every quantizer gets the same 128 calibration crops and is judged on the same 400 evaluation
crops: top-1/top-5 agreement with the float model, SQNR of all logits, single-thread batch-1
ONNX Runtime latency int8/fp32, and quantization wall time and peak memory (fresh process).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import baselines, images, metrics, models
from benchmarks.adapters import EIGHTBIT_METHODS
from benchmarks.report import Table
from benchmarks.worker import Result, Task, run_in_subprocess

WORK = images.WORK_DIR / "quantized"
PRE = " + pre-process"
EVAL_THREADS = 2  # evaluation only; latency is always measured with 1 thread
# Figures measured earlier on this protocol (top-1 agreement, SQNR dB), for comparison.
REFERENCE = {
    ("ONNX Runtime", "minmax + pre-process"): "0.77 / 13",
    ("ONNX Runtime", "percentile + pre-process"): "0.83 / 14 (21 s)",
    ("NNCF", "default"): "0.90 / 20",
}


@dataclass(frozen=True)
class Quantizer:
    tool: str
    variant: str
    task: Task
    memory_needed_mb: float = 0.0


def quantizers(model: Path, calibration: Path, count: int, tag: str) -> list[Quantizer]:
    """Every (tool, setting) the section compares, as worker tasks writing to ``WORK``."""
    WORK.mkdir(parents=True, exist_ok=True)

    def task(kind: str, name: str, **options: Any) -> Task:
        output = str(WORK / f"{tag}_{name}.onnx")
        return Task(kind, str(model), str(calibration), count, output=output, **options)

    threads = os.cpu_count() or 1
    out = [
        Quantizer(
            "eightbit", m, task("eightbit_quantize", f"eightbit_{m}", method=m, threads=threads)
        )
        for m in EIGHTBIT_METHODS
    ]
    for method in baselines.ORT_METHODS:
        need = 0.0 if method == "minmax" else baselines.ort_histogram_memory_mb(model, count)
        for pre in (False, True):
            # One sample per get_next(), as ORT's examples do (batching did not change the
            # ranges and was no faster here).
            name = f"ort_{method}{'_pre' if pre else ''}"
            t = task("ort_quantize", name, batch_size=1, method=method, preprocess=pre)
            out.append(Quantizer("ONNX Runtime", method + PRE * pre, t, need))
    for pre in (False, True):
        # NNCF leaves an unfused BatchNormalization in float after a quantized Conv, which
        # stops ORT from fusing QLinearConv; the pre-processed row shows NNCF at its best.
        t = task("nncf_quantize", f"nncf{'_pre' if pre else ''}", batch_size=1, preprocess=pre)
        out.append(Quantizer("NNCF", "default" + PRE * pre, t))
    return out


def quantize(q: Quantizer) -> Result:
    """Run one quantizer in a fresh process, unless the machine lacks the memory it needs."""
    available = metrics.available_memory_mb()
    if q.memory_needed_mb > available:
        return Result(
            ok=False,
            error=f"skipped: needs ~{q.memory_needed_mb / 1024:.1f} GB, "
            f"{available / 1024:.1f} GB available",
        )
    return run_in_subprocess(q.task)


# Whole photos with an unambiguous ImageNet answer: the float model must get them right, or the
# weights or preprocessing are wrong and every number below is meaningless.
SANITY = {
    "coffee": "967 espresso / 968 cup",
    "chelsea": "281-285 domestic cat",
    "rocket": "812 space shuttle",
}
SANITY_CLASSES = {"coffee": {967, 968}, "chelsea": set(range(281, 286)), "rocket": {812}}


def sanity_table() -> Table:
    """Top-5 ImageNet classes the float MobileNetV2 gives a few bundled photos."""
    photos = images.load_photos()
    sess = metrics.session(models.mobilenet_v2())
    name = sess.get_inputs()[0].name  # type: ignore[attr-defined]
    table = Table(
        "MobileNetV2 float sanity check (whole photo, resize 256, centre crop 224)",
        ["photo", "top-5 class indices", "expected top-1", "ok"],
    )
    for photo, expected in SANITY.items():
        logits = sess.run(None, {name: images.preprocess(photos[photo])})[0][0]  # type: ignore[attr-defined]
        top5 = [int(i) for i in np.argsort(-logits)[:5]]
        table.add(photo, " ".join(map(str, top5)), expected, top5[0] in SANITY_CLASSES[photo])
    return table


def run(only_tools: set[str] | None = None) -> Table:
    model = models.mobilenet_v2()
    calibration_set, evaluation = images.calibration_set(), images.evaluation_set()
    calibration = images.CALIBRATION_PATH
    reference = metrics.run_batches(model, evaluation, threads=EVAL_THREADS)
    table = Table(
        "MobileNetV2 (ImageNet weights): int8 vs float on 400 evaluation crops",
        [
            "tool",
            "setting",
            "top-1 agr.",
            "top-5 agr.",
            "SQNR dB",
            "latency int8/fp32 (1 thread)",
            "int8 ms",
            "fp32 ms",
            "quantize s",
            "peak RSS MB",
            "earlier reference",
        ],
        notes=[
            f"calibration: {len(calibration_set)} crops; evaluation: {len(evaluation)} other crops "
            "(benchmarks/images.py); agreement = same arg-max as the float model",
            "all: QDQ, per-channel int8 weights, uint8 activations; 'pre-process' = ORT's "
            "quant_pre_process (folds BatchNorm) before quantize_static",
            f"latency: batch 1, 1 intra-op thread, median of {metrics.LATENCY_RUNS} runs "
            "interleaved with fp32",
            "ORT Entropy with its defaults (num_bins = num_quantized_bins = 128) has a single "
            "candidate threshold, the whole histogram, so it matches MinMax",
            "NNCF's graphs leave a float op between Conv and the next QuantizeLinear (unfused "
            "BatchNorm; ReLU6 Clip even after pre-processing), so ONNX Runtime runs most of "
            "those Convs in float between Q/DQ pairs (13 of 52 become QLinearConv after "
            "pre-processing): its int8 MobileNetV2 is slower than fp32",
        ],
    )
    for q in quantizers(model, calibration, len(calibration_set), "mobilenet_v2"):
        if only_tools and q.tool not in only_tools:
            continue
        print(f"[quantize] {q.tool} {q.variant} ...", flush=True)
        result = quantize(q)
        ref = REFERENCE.get((q.tool, q.variant), "")
        if not result.ok:
            status = "not available" if result.unavailable else "failed"
            table.add(q.tool, q.variant, status, *[None] * 7, ref)
            table.notes.append(f"{q.tool} {q.variant}: {status}: {result.error}")
            continue
        output = Path(q.task.output)
        logits = metrics.run_batches(output, evaluation, threads=EVAL_THREADS)
        int8_ms, fp32_ms = metrics.interleaved_latency_ms(
            [output, model], np.asarray(evaluation[:1])
        )
        table.add(
            q.tool,
            q.variant,
            metrics.top1_agreement(reference, logits),
            metrics.top5_agreement(reference, logits),
            metrics.sqnr_db(reference, logits),
            int8_ms / fp32_ms,
            int8_ms,
            fp32_ms,
            result.seconds,
            result.peak_rss_mb,
            ref,
        )
    return table
