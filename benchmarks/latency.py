"""Section "latency": the ResNet-18-style model, int8 vs fp32 speed and file size.

The weights are random, so accuracy means nothing here; what matters is what each quantizer's
graph costs ONNX Runtime's int8 kernels (single thread, batch 1) and how much smaller the file
is. Calibration uses 32 crops: ranges do not change speed or size, and ORT's histogram methods
would need ~4 GB at 128 samples on this model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks import images, metrics, models
from benchmarks.accuracy import quantizers
from benchmarks.report import Table
from benchmarks.worker import run_in_subprocess

SAMPLES = 32


# Ranges don't change speed or size, so one method per tool is enough.
VARIANTS = {
    ("eightbit", "minmax"),
    ("ONNX Runtime", "minmax"),
    ("ONNX Runtime", "minmax + pre-process"),
    ("NNCF", "default"),
    ("NNCF", "default + pre-process"),
}


def run(only_tools: set[str] | None = None) -> Table:
    model = models.resnet18_style()
    images.calibration_set()
    sample = np.asarray(images.evaluation_set()[:1])
    table = Table(
        "ResNet-18-style (random weights): int8 vs fp32 latency and file size",
        [
            "tool",
            "setting",
            "latency int8/fp32",
            "int8 ms",
            "fp32 ms",
            "size int8/fp32",
            "int8 MB",
            "quantize s",
        ],
        notes=[
            f"calibration: {SAMPLES} crops; latency: batch 1, 1 intra-op thread, median of "
            f"{metrics.LATENCY_RUNS} runs "
            "interleaved with the fp32 model; size: the .onnx file",
        ],
    )
    fp32_bytes = metrics.file_size(model)
    for q in quantizers(model, images.CALIBRATION_PATH, SAMPLES, "resnet18"):
        tool, variant, task = q.tool, q.variant, q.task
        if (tool, variant) not in VARIANTS or (only_tools and tool not in only_tools):
            continue
        print(f"[latency] {tool} {variant} ...", flush=True)
        result = run_in_subprocess(task)
        if not result.ok:
            status = "not available" if result.unavailable else "failed"
            table.add(tool, variant, status, *[None] * 5)
            table.notes.append(f"{tool} {variant}: {status}: {result.error}")
            continue
        output = Path(task.output)
        int8_ms, fp32_ms = metrics.interleaved_latency_ms([output, model], sample)
        size = metrics.file_size(output)
        table.add(
            tool,
            variant,
            int8_ms / fp32_ms,
            int8_ms,
            fp32_ms,
            size / fp32_bytes,
            size / 2**20,
            result.seconds,
        )
    return table
