"""``eightbit quantize``: float ONNX model + data -> int8 QDQ model, plan and summary."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any

import click
import onnx

from eightbit._io import all_or_nothing, check_outputs, pending_path
from eightbit.calibrate import METHODS, CalibrationConfig, ImageOptions, Ranges
from eightbit.cli.options import (
    DATA_HELP,
    exact_kernels_note,
    image_flags,
    image_options,
    model_files,
    ray_option,
    require_ray,
)
from eightbit.errors import ConfigError, ModelError
from eightbit.graph import Graph
from eightbit.improve.presets import PRESET_DESCRIPTIONS, PRESETS, preset
from eightbit.pipeline import QuantizedModel, quantize, save_quantized
from eightbit.pipeline.choice import mode_note
from eightbit.plan import plan_path_for
from eightbit.pytorch import is_exported_program_file
from eightbit.quant import TARGETS, QuantConfig

PRESET_HELP = (
    "Improvement steps: "
    + "; ".join(f"{name} ({description})" for name, description in PRESET_DESCRIPTIONS.items())
    + ". The step flags below override the preset."
)


def model_bytes(path: str | Path) -> int:
    """Size of a model on disk, its external data file (``<name>.data``) included."""
    path = Path(path)
    data = path.with_name(f"{path.name}.data")
    return path.stat().st_size + (data.stat().st_size if data.exists() else 0)


def _summary(
    result: QuantizedModel, source: str, output: str, plan_path: Path, seconds: float
) -> dict[str, Any]:
    before, after = model_bytes(source), model_bytes(output)
    decisions = result.plan.fallbacks()
    # The int8 model's own types: a big float model would be read again from its spill file.
    integer = _integer_outputs(result.model, [d.name for d in decisions])
    fallbacks = [
        {
            "node": d.name,
            "op_type": d.op_type,
            "reason": d.reason,
            "integer_outputs": d.name in integer,
        }
        for d in decisions
    ]
    fused = sum(1 for d in result.plan.nodes if d.fused_into is not None)
    return {
        "model": source,
        "output": output,
        "plan": str(plan_path),
        "target": result.plan.config.target,
        "mode": result.plan.config.mode,
        "scheme": result.plan.config.scheme,
        "activations": result.plan.config.activation_type,
        "per_channel": result.plan.config.per_channel,
        "int16": list(result.plan.config.int16),
        "nodes_quantized": len(result.plan.quantized_nodes()) - fused,
        "activations_fused": fused,
        "fallbacks": fallbacks,
        "mode_choice": mode_note(result),
        "bytes_before": before,
        "bytes_after": after,
        "saved_percent": 100.0 * (1 - after / before) if before else 0.0,
        "calibration_samples": result.calibration_samples,
        "steps": [step.to_dict() for step in result.plan.steps],
        "check": None if result.check is None else result.check.to_dict(),
        "findings": [] if result.check is None else [f.to_dict() for f in result.check.findings()],
        "seconds": seconds,
        "runtime_note": exact_kernels_note(),
    }


def _integer_outputs(model: onnx.ModelProto, names: list[str]) -> set[str]:
    """The nodes among ``names`` whose every output is typed and not float: shape and index
    arithmetic, with nothing to quantize (the printed summary counts them in one row)."""
    graph = Graph(model)
    found = set()
    for name in names:
        try:
            outputs = [graph.info(tensor) for tensor in graph.node(name).outputs if tensor]
        except ModelError:  # a node the preparation replaced: listed as it is
            continue
        if outputs and all(info is not None and not info.is_float for info in outputs):
            found.add(name)
    return found


# A step's notes printed in the summary table, the first ones and the last ones (where the
# safety net says what it kept); the plan and --json keep every one (the net's promotion
# rung names each tensor it promoted: 56 on PP-OCRv6's recognizer).
FIRST_NOTES, LAST_NOTES = 8, 3


def _shown_notes(notes: list[str]) -> str:
    if len(notes) <= FIRST_NOTES + LAST_NOTES + 1:
        return "; ".join(notes)
    hidden = len(notes) - FIRST_NOTES - LAST_NOTES
    middle = f"... {hidden} more (the plan and --json list all) ..."
    return "; ".join([*notes[:FIRST_NOTES], middle, *notes[-LAST_NOTES:]])


def _print_summary(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(
        f"[bold]{summary['output']}[/bold]: {summary['nodes_quantized']} nodes int8 "
        f"({summary['activations_fused']} activations fused), "
        f"{len(summary['fallbacks'])} kept in float; mode {summary['mode']}, "
        f"target {summary['target']}, "
        f"scheme {summary['scheme']}, "
        f"{summary['activations']} activations, "
        f"{'per-channel' if summary['per_channel'] else 'per-tensor'} weights"
        + (f"; int16 (16x8): {', '.join(summary['int16'])}" if summary["int16"] else "")
    )
    if summary["mode_choice"]:
        console.print(summary["mode_choice"], markup=False)
    console.print(
        f"size {summary['bytes_before']:,} -> {summary['bytes_after']:,} bytes "
        f"({summary['saved_percent']:.1f}% saved); plan {summary['plan']}; "
        f"{summary['seconds']:.1f} s"
    )
    if summary["fallbacks"]:
        table = Table(title="kept in float", title_justify="left")
        for column in ("node", "op type", "reason"):
            table.add_column(column)
        integer = [row for row in summary["fallbacks"] if row["integer_outputs"]]
        for row in summary["fallbacks"]:
            if not row["integer_outputs"]:
                table.add_row(row["node"], row["op_type"], row["reason"] or "")
        if integer:
            table.add_row(
                f"{len(integer)} node(s)",
                ", ".join(sorted({row["op_type"] for row in integer})),
                "integer outputs only (shape and index arithmetic): nothing to quantize; "
                "--json lists each",
            )
        console.print(table)
    if summary["steps"]:
        table = Table(title="improvement steps", title_justify="left")
        for column in ("step", "seconds", "output SQNR dB", "notes"):
            table.add_column(column)
        for step in summary["steps"]:
            table.add_row(
                step["name"],
                f"{step['seconds']:.1f}",
                _before_after(step["before_db"], step["after_db"]),
                _shown_notes(step["notes"]),
            )
        console.print(table)
    if summary["runtime_note"]:
        console.print(f"note: {summary['runtime_note']}", markup=False)
    check = summary["check"]
    if check is None:
        console.print("quick check: no held-back samples (see --check-samples)")
        return
    for output in check["outputs"]:
        agreement = output["top1_agreement"]
        agree = "" if agreement is None else f"top-1 agreement {agreement:.1%}, "
        worst = _worst_slice(output)
        console.print(
            f"quick check on {check['samples']} held-back samples, output {output['name']!r}: "
            f"{agree}SQNR {_db(output['sqnr_db'])} dB{worst}"
        )
    for finding in check.get("findings", []):
        console.print(f"[bold red]{finding['level'].upper()}[/bold red]: {finding['message']}")


def _db(value: float | str) -> str:
    number = float(value)
    return f"{number:.1f}" if math.isfinite(number) else str(value)


def _worst_slice(output: dict[str, Any]) -> str:
    """ ", worst slice <axis, index> X dB" (§A.9), or nothing for an output without slices."""
    slices = output.get("slices")
    if not slices:
        return ""
    where = f"axis {slices['worst_axis']} index {slices['worst_index']}"
    silent = slices.get("silent", 0)
    unjudged = f" ({silent} silent probability slice(s) not judged)" if silent else ""
    return f", worst slice ({where}) {_db(slices['worst_sqnr_db'])} dB{unjudged}"


def _before_after(before: float | str | None, after: float | str | None) -> str:
    if before is None or after is None:
        return ""
    return f"{float(before):.2f} -> {float(after):.2f}"


def _write_report(
    model: str | onnx.ModelProto,
    output: str,
    plan_path: Path,
    data: str,
    report_path: str,
    batch_size: int,
    threads: int | None,
    image: ImageOptions | None,
) -> None:
    from eightbit.analysis import RunOptions
    from eightbit.report import build_report, write_report

    options = RunOptions(batch_size=batch_size, threads=threads, image=image)
    # The model and plan are not renamed into place yet: read them where they are, and
    # name them as they will be.
    written = pending_path(output)
    data_for_page = build_report(
        model,
        written,
        data,
        plan=pending_path(plan_path),
        title=f"eightbit report: {Path(output).name}",
        options=options,
    )
    summary = dataclasses.replace(data_for_page.summary, int8_model=Path(output).name)
    write_report(dataclasses.replace(data_for_page, summary=summary), report_path)


def _config(
    target: str | None,
    scheme: str | None,
    activations: str | None,
    per_tensor: bool,
    no_space_to_depth: bool,
    exclude: tuple[str, ...],
    op_types: tuple[str, ...],
) -> QuantConfig:
    """The QuantConfig of the flags: the target's defaults, then what was given."""
    given: dict[str, Any] = {
        "scheme": scheme,
        "activations": activations,
        "per_channel": False if per_tensor else None,
        "space_to_depth_stem": False if no_space_to_depth else None,
        "exclude": exclude,
        "op_types": op_types or None,
    }
    given = {name: value for name, value in given.items() if value is not None}
    return QuantConfig.for_target(target or "ort", **given)


@click.command(name="quantize")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-d", "--data", help=DATA_HELP + " Needed unless --ranges or --mode dynamic.")
@click.option("-o", "--output", required=True, help="The int8 QDQ model to write (.onnx).")
@click.option(
    "--method",
    type=click.Choice(METHODS),
    default="percentile",
    show_default=True,
    help="Activation range selection.",
)
@click.option("--percentile", type=float, default=99.99, show_default=True)
@click.option("--ranges", "ranges_path", help="Reuse ranges from `eightbit calibrate`.")
@click.option(
    "--target",
    type=click.Choice(list(TARGETS)),
    help="Where the model will run; sets the formats and placement its runtime needs and "
    "refuses what it cannot run (docs/targets.md) [ort].",
)
@click.option(
    "--scheme", type=click.Choice(["affine", "pow2"]), help="Scale scheme [affine; the target's]."
)
@click.option(
    "--activations",
    type=click.Choice(["uint8", "int8"]),
    help="Activation type [uint8 for affine, int8 for pow2; the target's].",
)
@click.option(
    "--mode",
    type=click.Choice(["static", "dynamic"]),
    help="static: activation ranges calibrated on --data; dynamic: int8 weights, "
    "activations quantized at run time, no data needed [static; a transformer takes "
    "whichever of the two gives the better SQNR on held-back samples, unless it runs "
    "more than 5% slower].",
)
@click.option("--per-tensor", is_flag=True, help="One weight scale per tensor, not per channel.")
@click.option(
    "--no-space-to-depth",
    "no_space_to_depth",
    is_flag=True,
    help="Keep a strided stem Conv as it is (by default it reads a SpaceToDepth of the "
    "input: the same integers, faster in ONNX Runtime; a microcontroller pays for its zeros).",
)
@click.option("--exclude", multiple=True, help="Keep this node in float (repeatable).")
@click.option(
    "--int16",
    "int16",
    multiple=True,
    metavar="TENSOR",
    help="Store this activation tensor as int16, weights staying int8 (16x8; repeatable).",
)
@click.option("--op-types", multiple=True, help="Quantize only these op types (repeatable).")
@click.option("--samples", type=int, help="Calibrate on at most this many samples.")
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option(
    "--check-samples",
    type=int,
    help="Samples held back from calibration for the quick check [up to 64; 0 disables].",
)
@click.option("--threads", type=int, help="Threads for ONNX Runtime.")
@click.option("--report", "report_path", help="Also write an HTML report (float vs int8) here.")
@click.option(
    "--preset",
    "preset_name",
    type=click.Choice(list(PRESETS)),
    default="default",
    show_default=True,
    help=PRESET_HELP,
)
@click.option(
    "--equalize/--no-equalize",
    default=None,
    help="Cross-layer equalization before calibration [preset].",
)
@click.option(
    "--clipping-choice/--no-clipping-choice",
    "choose_clipping",
    default=None,
    help="Calibrated ranges or the observed extremes for the whole model, whichever gives "
    "the better output on calibration samples [preset].",
)
@click.option(
    "--refine-ranges/--no-refine-ranges",
    default=None,
    help="Choose each activation's range by the error it causes [preset].",
)
@click.option(
    "--bias-correction/--no-bias-correction",
    default=None,
    help="Correct the output shift of weight rounding [preset: where it helps].",
)
@click.option(
    "--adaround/--no-adaround", default=None, help="Learned rounding (needs PyTorch) [preset]."
)
@click.option("--adaround-iters", type=int, help="AdaRound steps per layer [1000].")
@click.option(
    "--reconstruct/--no-reconstruct",
    default=None,
    help=(
        "Layer-wise reconstruction of weights and biases (numpy; instead of --adaround) "
        "[preset: default when the output SQNR is under 40 dB and it is predicted to take "
        "at most 5 minutes, less the better the output]."
    ),
)
@click.option(
    "--finetune/--no-finetune",
    default=None,
    help="Quantization-aware fine-tuning by distillation after the other steps (needs "
    "PyTorch) [preset].",
)
@click.option(
    "--finetune-steps", type=int, help="Fine-tuning's batches at most (early stop) [250]."
)
@click.option(
    "--max-drop",
    type=float,
    help="Return layers to float (or promote tensors to int16: --target mcu) until top-1 "
    "agreement drops by at most this (0.01 = 1 point).",
)
@click.option(
    "--min-sqnr",
    type=float,
    help="Return layers to float (or promote tensors to int16: --target mcu) until the output "
    "SQNR is this (dB).",
)
@click.option(
    "--max-latency",
    type=float,
    help="With --max-drop/--min-sqnr: return no layer whose float version would make the "
    "model slower than this ratio of the float model's latency (e.g. 0.6).",
)
@click.option(
    "--no-safety-net",
    "no_safety_net",
    is_flag=True,
    help="Do not run the fallback by itself when the quick check finds a collapsed output "
    "slice or one under 10 dB (the default preset does; fast never does).",
)
@image_flags
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
@ray_option
def quantize_command(
    model: str,
    data: str | None,
    output: str,
    method: str,
    percentile: float,
    ranges_path: str | None,
    target: str | None,
    scheme: str | None,
    activations: str | None,
    mode: str | None,
    per_tensor: bool,
    no_space_to_depth: bool,
    exclude: tuple[str, ...],
    int16: tuple[str, ...],
    op_types: tuple[str, ...],
    samples: int | None,
    batch_size: int,
    check_samples: int | None,
    threads: int | None,
    report_path: str | None,
    preset_name: str,
    equalize: bool | None,
    choose_clipping: bool | None,
    refine_ranges: bool | None,
    bias_correction: bool | None,
    adaround: bool | None,
    adaround_iters: int | None,
    reconstruct: bool | None,
    finetune: bool | None,
    finetune_steps: int | None,
    max_drop: float | None,
    min_sqnr: float | None,
    max_latency: float | None,
    no_safety_net: bool,
    as_json: bool,
    ray: str | None,
    **image_values: Any,
) -> None:
    """Quantize MODEL to int8 and write a QDQ ONNX model that runs on int8 kernels.

    MODEL is a float .onnx file, or a .pt2 file saved by torch.export.save (needs PyTorch).

    The improvement steps of --preset run between calibration and export; the plan
    records each with its time and the output SQNR before and after it.
    """
    started = time.perf_counter()
    require_ray(ray)
    if adaround_iters is not None and not adaround:
        raise ConfigError("--adaround-iters needs --adaround")
    if finetune_steps is not None and not (
        finetune or (preset_name == "finetune" and finetune is None)
    ):
        raise ConfigError("--finetune-steps needs --finetune (or --preset finetune)")
    improve = preset(
        preset_name,
        equalize=equalize,
        choose_clipping=choose_clipping,
        refine_ranges=refine_ranges,
        bias_correction=bias_correction,
        adaround=adaround,
        adaround_iters=adaround_iters,
        reconstruct=reconstruct,
        finetune=finetune,
        finetune_steps=finetune_steps,
        max_drop=max_drop,
        min_sqnr=min_sqnr,
        max_latency=max_latency,
        safety_net=False if no_safety_net else None,
    )
    config = _config(target, scheme, activations, per_tensor, no_space_to_depth, exclude, op_types)
    if int16:
        config = dataclasses.replace(config, int16=int16)
    # No --mode: static, or dynamic for a transformer that static quantization leaves
    # under the budget (numerics §D.6).
    config = dataclasses.replace(config, mode=mode or "auto")  # type: ignore[arg-type]
    calibration = CalibrationConfig(
        method=method,  # type: ignore[arg-type]
        percentile=percentile,
        samples=samples,
        batch_size=batch_size,
    )
    image = image_options(image_values)
    inputs = model_files(model) + ([data] if data else []) + ([ranges_path] if ranges_path else [])
    if report_path and not data:
        raise ConfigError("--report needs --data: the report runs both models on it")
    check_outputs(
        [*inputs, Ranges.sidecar_path(ranges_path) if ranges_path else None],
        files=[output, plan_path_for(output), report_path],
    )
    ranges = Ranges.load(ranges_path) if ranges_path else None
    with all_or_nothing():  # the model, its plan and the report: all three or none
        result = quantize(
            model,
            data,
            config,
            calibration=calibration,
            ranges=ranges,
            image=image,
            check_samples=check_samples,
            threads=threads,
            progress=not as_json,
            improve=improve,
            ray=ray,
        )
        plan_path = save_quantized(result, output, *inputs)
        if report_path and data:
            # A .pt2 is no ONNX file: the report reads the exported float model instead.
            float_model = result.float_model if is_exported_program_file(model) else model
            _write_report(
                float_model, output, plan_path, data, report_path, batch_size, threads, image
            )
    summary = _summary(result, model, output, plan_path, time.perf_counter() - started)
    if report_path:
        summary["report"] = report_path
    if as_json:
        click.echo(json.dumps(summary))
    else:
        _print_summary(summary)
