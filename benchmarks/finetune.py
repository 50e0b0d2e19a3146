"""Section "finetune": quantization-aware fine-tuning on MobileNetV2 (issue 17, numerics §T.5).

The protocol of the "quantize" section (the 400 evaluation crops; agreement and SQNR of
the logits against the float model; latency batch 1, one thread, interleaved with fp32),
with the 128 calibration crops followed by up to 512 unlabeled crops of the pool as the
data: eightbit's default preset and its ``finetune`` preset on the same data (the last 64
crops are the quick check's, unseen by both), and NNCF's quantization-aware training
(``nncf.torch``: ``nncf.quantize`` on the 128 calibration crops, then the same distillation
loss, batch and step budget on the same crops, then ``nncf.strip``, which needs ``torchao``)
beside them, and AIMET's (aimet-torch in a venv of its own, ``benchmarks.aimet_qat``: BatchNorm
folded, its per-channel simulation calibrated on the same 128 crops, then the same loss, batch,
step budget, crops, seed and learning rate, exported as QDQ); when a baseline fails its row
says why. Times are wall clock on a shared machine.
"""

from __future__ import annotations

import resource
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import images, metrics, models
from benchmarks.accuracy import EVAL_THREADS
from benchmarks.distill import LEARNING_RATE
from benchmarks.report import Table

WORK = Path(__file__).resolve().parent / "_work"
POOL = WORK / "pool_512.npy"
POOL_CROPS = 512
# The goal for MobileNetV2, all 8-bit.
AGREEMENT_GOAL, SQNR_GOAL, LATENCY_GOAL, MINUTES_GOAL = 0.95, 25.0, 0.6, 10.0
THREADS = 2
AIMET_SETTING = "QAT (aimet-torch)"
AIMET_CROPS = WORK / "finetune_aimet_crops.npy"
AIMET_TIMEOUT = 3600.0
COLUMNS = [
    "tool",
    "setting",
    "top-1 agreement",
    "SQNR dB",
    "latency int8/fp32",
    "seconds",
    "CPU seconds",
    "held-back dB before -> after",
    "goal met",
]


def run() -> Table:
    from eightbit.improve.presets import DEFAULT_FINETUNE_STEPS

    table = Table("Fine-tuning by distillation on MobileNetV2 (issue 17)", COLUMNS)
    model = models.mobilenet_v2()
    calibration, evaluation = images.calibration_set(), images.evaluation_set()
    pool = np.load(images.sample_pool(POOL_CROPS), mmap_mode="r")
    data = np.concatenate([np.asarray(calibration), np.asarray(pool[:POOL_CROPS])])
    reference = metrics.run_batches(model, evaluation, threads=EVAL_THREADS)
    for preset in ("default", "finetune"):
        print(f"[finetune] eightbit {preset} ...", flush=True)
        _eightbit_row(table, preset, model, data, evaluation, reference)
    print("[finetune] NNCF QAT ...", flush=True)
    try:
        _nncf_row(table, np.asarray(calibration), data, evaluation, reference)
    except Exception as error:  # a baseline's failure is a row, not a crash
        table.add("NNCF", "QAT", None, None, None, None, None, "", f"failed: {error}"[:120])
    print("[finetune] AIMET QAT ...", flush=True)
    error = _aimet_row(table, len(calibration), data[:-64], evaluation, reference)
    if error:
        table.add(
            "AIMET", AIMET_SETTING, None, None, None, None, None, "", f"failed: {error}"[:120]
        )
    table.notes.append(
        f"data: the 128 calibration crops then {POOL_CROPS} pool crops; eightbit holds the "
        "last 64 back for its quick check and 1/8 of the rest back from training (early "
        f"stop, never worse); {DEFAULT_FINETUNE_STEPS} steps of 16 at most, {THREADS} "
        "threads; NNCF and AIMET: the same steps, batch, loss, crops and Adam rate "
        f"({LEARNING_RATE:g}), their own fake quantizers (NNCF: BatchNorm frozen in eval mode; "
        "AIMET: BatchNorm folded; both train the weights and the quantizers' ranges); seconds: "
        "wall clock on a shared 2-core machine (AIMET's with its interpreter's start and "
        "imports); CPU seconds: every thread of the process (AIMET: of its worker process; on "
        "2 idle cores the wall clock is at least half of it)"
    )
    table.notes.append(
        f"goal: >= {AGREEMENT_GOAL} agreement and >= {SQNR_GOAL} dB, all 8-bit, latency <= "
        f"{LATENCY_GOAL}x fp32, <= {MINUTES_GOAL:g} minutes"
    )
    return table


def _eightbit_row(
    table: Table,
    preset: str,
    model: Path,
    data: np.ndarray,
    evaluation: np.ndarray,
    reference: np.ndarray,
) -> None:
    import eightbit

    started, cpu_started = time.perf_counter(), time.process_time()
    result = eightbit.quantize(str(model), data, improve=preset, threads=THREADS)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    output = WORK / f"mobilenet_v2_qat_branch_{preset}.onnx"
    result.save(output)
    step = next((s for s in result.plan.steps if s.name == "finetune"), None)
    moved = "" if step is None else f"{step.before_db:.2f} -> {step.after_db:.2f}"
    _add(
        table,
        "eightbit",
        f"--preset {preset}",
        output,
        model,
        evaluation,
        reference,
        (seconds, cpu),
        moved,
    )


def _add(
    table: Table,
    tool: str,
    setting: str,
    output: Path,
    model: Path,
    evaluation: np.ndarray,
    reference: np.ndarray,
    times: tuple[float, float],
    moved: str,
) -> None:
    """A row; ``times``: wall clock and CPU seconds (every thread of this process)."""
    seconds, cpu = times
    logits = metrics.run_batches(output, evaluation, threads=EVAL_THREADS)
    int8_ms, fp32_ms = metrics.interleaved_latency_ms([output, model], np.asarray(evaluation[:1]))
    agreement, sqnr = metrics.top1_agreement(reference, logits), metrics.sqnr_db(reference, logits)
    ratio = int8_ms / fp32_ms
    met = (
        agreement >= AGREEMENT_GOAL
        and sqnr >= SQNR_GOAL
        and ratio <= LATENCY_GOAL
        and seconds <= 60 * MINUTES_GOAL
    )
    met_text = "yes" if met else "no"
    table.add(tool, setting, agreement, sqnr, ratio, seconds, cpu, moved, met_text)


def _nncf_row(
    table: Table,
    calibration: np.ndarray,
    data: np.ndarray,
    evaluation: np.ndarray,
    reference: np.ndarray,
) -> None:
    import torch

    from eightbit.improve.presets import DEFAULT_FINETUNE_STEPS

    previous = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        started, cpu_started = time.perf_counter(), time.process_time()
        module = models.load_mobilenet_v2_torch().eval()
        quantized = _nncf_qat(module, calibration, data[:-64], DEFAULT_FINETUNE_STEPS)
        output = WORK / "mobilenet_v2_qat_branch_nncf_qat.onnx"
        _export(quantized, output)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    finally:
        torch.set_num_threads(previous)
    _add(
        table,
        "NNCF",
        "QAT (nncf.torch)",
        output,
        models.mobilenet_v2(),
        evaluation,
        reference,
        (seconds, cpu),
        "",
    )


def _nncf_qat(module: Any, calibration: np.ndarray, crops: np.ndarray, steps: int) -> Any:
    """``nncf.quantize`` on the calibration crops, then distillation on ``crops`` (§T.5's loss)."""
    import nncf
    import torch

    from benchmarks import distill

    batches = [
        torch.from_numpy(calibration[i : i + 16].copy()) for i in range(0, len(calibration), 16)
    ]
    # subset_size counts dataset items, here batches of 16: every batch, all the crops.
    quantized = nncf.quantize(module, nncf.Dataset(batches), subset_size=len(batches))
    distill.distill(quantized, distill.teacher_logits(module, crops), crops, steps)
    return quantized


def _aimet_row(
    table: Table,
    calibration_count: int,
    crops: np.ndarray,
    evaluation: np.ndarray,
    reference: np.ndarray,
) -> str | None:
    """AIMET's QAT through the worker under its venv's interpreter (``benchmarks.aimet_qat``);
    None when its row is in the table, else why it is not."""
    from benchmarks import aimet_qat, worker
    from eightbit.improve.presets import DEFAULT_FINETUNE_STEPS

    unavailable = aimet_qat.ensure_venv()
    if unavailable:
        return unavailable
    np.save(AIMET_CROPS, crops)  # the calibration crops first, as the worker reads them
    output = WORK / "mobilenet_v2_qat_branch_aimet_qat.onnx"
    task = worker.Task(
        kind="aimet_qat",
        model=str(models.mobilenet_v2_weights_path()),
        data=str(AIMET_CROPS),
        samples=calibration_count,
        output=str(output),
        threads=THREADS,
        steps=DEFAULT_FINETUNE_STEPS,
    )
    started, cpu_started = time.perf_counter(), _children_cpu_seconds()
    result = worker.run_in_subprocess(task, AIMET_TIMEOUT, python=str(aimet_qat.PYTHON))
    seconds, cpu = time.perf_counter() - started, _children_cpu_seconds() - cpu_started
    if not result.ok:
        return result.error
    model = models.mobilenet_v2()
    _add(table, "AIMET", AIMET_SETTING, output, model, evaluation, reference, (seconds, cpu), "")
    return None


def _children_cpu_seconds() -> float:
    """CPU seconds of every finished child process (the worker runs in one)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _export(quantized: Any, path: Path) -> None:
    """NNCF's model as QDQ ONNX: ``nncf.strip`` first turns its own FakeQuantize modules
    into torch's fake-quantize ops (which the TorchScript exporter writes as Q/DQ pairs;
    without it the export keeps NNCF's op, which ONNX Runtime does not run), then the
    exporter's Identity nodes are bypassed (ONNX Runtime's constant folding refuses a
    model whose Identity nodes repeat an initializer: "Attempt to replace the existing
    tensor")."""
    import nncf
    import onnx
    import torch

    example = torch.zeros(1, 3, models.IMAGE_SIZE, models.IMAGE_SIZE)
    stripped = nncf.strip(quantized, example_input=example)
    temporary = path.with_suffix(".tmp.onnx")
    torch.onnx.export(
        stripped,
        (example,),
        str(temporary),
        input_names=[models.INPUT_NAME],
        output_names=[models.OUTPUT_NAME],
        dynamic_axes={models.INPUT_NAME: {0: "N"}, models.OUTPUT_NAME: {0: "N"}},
        opset_version=models.OPSET,
        dynamo=False,
    )
    model = onnx.load(str(temporary))
    _bypass_identities(model.graph)
    onnx.save(model, str(path))
    temporary.unlink()


def _bypass_identities(graph: Any) -> None:
    """Every Identity node not writing a graph output removed, its readers reading its input."""
    outputs = {value.name for value in graph.output}
    renamed = {
        node.output[0]: node.input[0]
        for node in graph.node
        if node.op_type == "Identity" and node.output[0] not in outputs
    }
    kept = [
        node for node in graph.node if node.output[0] not in renamed or node.op_type != "Identity"
    ]
    for node in kept:
        for index, name in enumerate(node.input):
            while name in renamed:
                name = renamed[name]
            node.input[index] = name
    del graph.node[:]
    graph.node.extend(kept)
