"""Section "promotion": mixed precision to a budget on a microcontroller (issue 18, §R.11).

MobileNetV2 (ImageNet weights) quantized for ``--target mcu`` with the default preset, then
with ``--min-sqnr 25``: no node may return to float there, so the budget promotes activation
tensors to int16 (16x8). Agreement and logit SQNR against the float model on the evaluation
crops (ONNX Runtime, which runs the int16 Q/DQ pairs in float: the 16x8 scheme's accuracy);
flash and arena as ``promote_cost.footprint`` estimates them (parameter bytes with the s16
kernels' int64 biases; the greedy arena of ``codegen.arena`` over the activation tensors,
one byte per int8 element, two per int16, a Relu6 the engine folds into its int16 layer
counted once, §E.14), each as a multiple of the all-int8 model's.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from benchmarks import images, metrics, models
from benchmarks.report import Table

CALIBRATION_SAMPLES = 128
EVALUATION_SAMPLES = 400
EVAL_THREADS = 2
MIN_SQNR = 25.0
OUT_DIR = models.WORK_DIR / "promotion"


def run() -> list[Table]:
    calibration = np.asarray(images.calibration_set()[:CALIBRATION_SAMPLES])
    evaluation = np.asarray(images.evaluation_set()[:EVALUATION_SAMPLES])
    model = models.mobilenet_v2()
    table = Table(
        "MobileNetV2 (ImageNet weights), --target mcu: int16 promotion to a budget (§R.11)",
        [
            "setting",
            "top-1 agr.",
            "SQNR dB",
            "float nodes",
            "int16 tensors",
            "flash x int8",
            "arena x int8",
            "C arena x int8",
            "C tables x int8",
            "rebuilds (bound)",
            "quantize s",
        ],
        notes=[
            f"calibration: {len(calibration)} crops; evaluation: {len(evaluation)} other "
            "crops, run in ONNX Runtime (int16 Q/DQ as float arithmetic: the 16x8 accuracy)",
            "flash, arena: promote_cost.footprint (int8 weights and int32 biases, int64 biases "
            "where a weighted op reads an int16 tensor; greedy arena of codegen.arena over the "
            "activation tensors, 1 byte per int8 element, 2 per int16; an int16 Conv's Relu6 "
            "runs as the Conv's bounds, one tensor, §E.14), as multiples of the all-int8 "
            "model's; cycles are only estimated in the plan's notes",
            "C arena, C tables: the generated C's NAME_ARENA_BYTES and constant tables "
            "(weights, biases, multipliers, lookup tables) of the engine's program (§G.5), as "
            "multiples of the all-int8 model's",
            "times on a machine shared with other jobs",
        ],
    )
    reference = metrics.run_batches(model, evaluation, threads=EVAL_THREADS)
    base = None
    for label, budget in (
        ("mcu (default preset)", None),
        (f"mcu --min-sqnr {MIN_SQNR:g}", MIN_SQNR),
    ):
        print(f"[promotion] {label} ...", flush=True)
        result, seconds = _quantize(model, calibration, budget)
        output = OUT_DIR / f"mobilenet_v2_mcu_{'int8' if budget is None else 'promoted'}.onnx"
        result.save(output)
        logits = metrics.run_batches(output, evaluation, threads=EVAL_THREADS)
        flash, arena = _footprint(result, calibration[:1])
        c_arena, c_tables = _generated(output)
        base = base or (flash, arena, c_arena, c_tables)
        table.add(
            label,
            metrics.top1_agreement(reference, logits),
            metrics.sqnr_db(reference, logits),
            len(result.plan.fallbacks()),
            len(result.plan.config.int16),
            flash / base[0],
            arena / base[1],
            c_arena / base[2],
            c_tables / base[3],
            _rebuilds(result),
            seconds,
        )
    return [table]


def _quantize(model: Path, calibration: np.ndarray, min_sqnr: float | None) -> tuple[object, float]:
    from eightbit.improve.presets import preset
    from eightbit.pipeline import quantize
    from eightbit.quant import QuantConfig

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    improve = preset("default") if min_sqnr is None else preset("default", min_sqnr=min_sqnr)
    started = time.perf_counter()
    result = quantize(
        model, {models.INPUT_NAME: calibration}, QuantConfig.for_target("mcu"), improve=improve
    )
    return result, time.perf_counter() - started


def _footprint(result: object, sample: np.ndarray) -> tuple[int, int]:
    from eightbit.analysis.memory import memory_usage
    from eightbit.graph import Graph
    from eightbit.improve.promote_cost import footprint, tensor_facts

    plan = result.plan  # type: ignore[attr-defined]
    prepared = result.prepared_model  # type: ignore[attr-defined]
    graph = Graph(prepared)
    names = [name for name in plan.tensors if name not in graph.initializers]
    facts = tensor_facts(prepared, names, {models.INPUT_NAME: sample})
    float_graph = Graph(result.float_model)  # type: ignore[attr-defined]
    parameters = memory_usage(float_graph, Graph(result.model)).int8_bytes  # type: ignore[attr-defined]
    return footprint(graph, plan, facts, parameters)


def _generated(path: Path) -> tuple[int, int]:
    """(arena, constant table) bytes of the C generated for the quantized model at ``path``."""
    from eightbit.codegen import generate
    from eightbit.engine import prepare

    generated = generate(prepare(str(path)), "mobilenet_v2", "MobileNetV2")
    return generated.arena.size, generated.table_bytes


def _rebuilds(result: object) -> str | None:
    for step in result.plan.steps:  # type: ignore[attr-defined]
        if step.name == "int16_promotion":
            for note in step.notes:
                if "rebuilds: " in note:
                    return note.split("rebuilds: ", 1)[1].split(",")[0]
    return None
