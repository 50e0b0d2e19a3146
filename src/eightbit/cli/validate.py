"""``eightbit validate``: what int8 cost, at the outputs and per layer; thresholds for CI.

Exit 0 when every threshold given is met, 1 when one is not, 2 on bad input. The data
and run options are shared with ``eightbit report`` (``data_options``, ``run_options``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from eightbit.analysis import (
    OutputMetrics,
    RunOptions,
    ValidationResult,
    check_thresholds,
)
from eightbit.analysis.models import load_pair
from eightbit.analysis.slices import ERROR
from eightbit.analysis.validate import IN_PROCESS, Passes, validate_pair
from eightbit.cli.options import (
    DATA_HELP,
    exact_kernels_note,
    image_flags,
    image_options,
    ray_option,
    require_ray,
)
from eightbit.errors import ConfigError

F = TypeVar("F", bound=Callable[..., Any])
WORST_SHOWN = 10
# Wide enough that long tensor names are not cut when the output is not a terminal.
_PIPE_WIDTH = 200


def data_options(function: F) -> F:
    """--data, --labels, what-if, batch/sample/thread counts and image preprocessing options."""
    options = [
        click.option("-d", "--data", required=True, metavar="DATA", help=DATA_HELP),
        click.option(
            "--labels",
            metavar="LABELS",
            help="Class ids: an .npy (one per sample) or a folder of images in class sub-folders.",
        ),
        click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True),
        click.option(
            "--samples",
            type=click.IntRange(min=1),
            default=None,
            help="Use only the first N samples (and labels).",
        ),
        click.option(
            "--threads",
            type=click.IntRange(min=1),
            default=None,
            help="ONNX Runtime threads (default: its own choice).",
        ),
        click.option(
            "--what-if",
            type=click.IntRange(min=0),
            default=3,
            show_default=True,
            help="Output what-if runs for this many worst layers.",
        ),
        click.option("--progress/--no-progress", default=False, help="Progress bars on stderr."),
        ray_option,
    ]
    for option in reversed(options):
        function = option(function)
    return image_flags(function)


def data_passes(params: dict[str, Any], options: RunOptions) -> Passes:
    """Where the passes over ``--data`` run: here, or on the ``--ray`` cluster."""
    if params["ray"] is None:
        return IN_PROCESS
    from eightbit.distributed import ray_passes

    return ray_passes(params["data"], options, params["ray"])


def run_options(params: dict[str, Any]) -> RunOptions:
    """``RunOptions`` from the parsed ``data_options`` (the image flags are popped)."""
    return RunOptions(
        batch_size=params["batch_size"],
        samples=params["samples"],
        threads=params["threads"],
        image=image_options(params),
        progress=params["progress"],
    )


@click.command("validate")
@click.argument("float_model", metavar="FLOAT.onnx")
@click.argument("int8_model", metavar="INT8.onnx")
@data_options
@click.option(
    "--min-agreement",
    type=click.FloatRange(0.0, 1.0),
    default=None,
    help="Exit 1 unless top-1 agreement reaches this fraction (e.g. 0.99).",
)
@click.option(
    "--min-sqnr",
    type=float,
    default=None,
    help="Exit 1 unless every output's SQNR reaches this many dB.",
)
@click.option("--no-layers", is_flag=True, help="Output metrics only (one pass, faster).")
@click.option(
    "--latency-runs",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Also time each model (1 thread, batch 1; median of N runs).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
def validate_command(
    float_model: str,
    int8_model: str,
    min_agreement: float | None,
    min_sqnr: float | None,
    no_layers: bool,
    latency_runs: int,
    as_json: bool,
    **params: Any,
) -> None:
    """Compare INT8.onnx (a QDQ model) with FLOAT.onnx on the same inputs.

    Shows output metrics (agreement, accuracy with --labels, SQNR, cosine, max abs error),
    the worst layers by their own SQNR with what-if runs, and parameter memory. With
    --min-agreement or --min-sqnr it exits 1 when a threshold is not met.
    """
    if min_sqnr is not None and not math.isfinite(min_sqnr):
        raise ConfigError(f"--min-sqnr must be a finite number of dB (got {min_sqnr})")
    require_ray(params["ray"])
    options = run_options(params)
    result = validate_pair(
        load_pair(float_model, int8_model, find_plan=False),
        params["data"],
        labels=params["labels"],
        layers=not no_layers,
        what_if=params["what_if"],
        latency_runs=latency_runs,
        options=options,
        passes=data_passes(params, options),
    )
    failures = check_thresholds(result, min_agreement=min_agreement, min_sqnr=min_sqnr)
    if as_json:
        payload = result.to_dict()
        payload["runtime_note"] = exact_kernels_note()
        payload["thresholds"] = {
            "min_agreement": min_agreement,
            "min_sqnr": min_sqnr,
            "passed": not failures,
            "failures": list(failures),
        }
        click.echo(json.dumps(payload, allow_nan=False))
    else:
        print_result(result, failures, thresholds=min_agreement is not None or min_sqnr is not None)
    if failures:
        click.get_current_context().exit(1)


def print_result(result: ValidationResult, failures: tuple[str, ...], *, thresholds: bool) -> None:
    console = Console(highlight=False)
    if not console.is_terminal:
        console.width = max(console.width, _PIPE_WIDTH)
    console.print(_outputs_table(result.outputs, result.samples))
    if result.layers is not None:
        console.print(_worst_table(result))
        if result.layers.what_if:
            console.print(_what_if_table(result))
    memory = result.memory
    console.print(
        f"parameters: {memory.float_bytes:,} bytes float -> {memory.int8_bytes:,} bytes int8 "
        f"({memory.saved_percent:.1f}% saved)",
        markup=False,
    )
    if result.latency is not None:
        latency = result.latency
        console.print(
            f"latency (1 thread, batch 1, median of {latency.runs}): float "
            f"{latency.float_ms:.3f} ms, int8 {latency.int8_ms:.3f} ms",
            markup=False,
        )
    note = exact_kernels_note()
    if note:
        console.print(f"note: {note}", markup=False)
    for finding in result.findings():
        style = "bold red" if finding.level == ERROR else "yellow"
        console.print(finding.line(), markup=False, style=style)
    for failure in failures:
        console.print(f"FAILED: {failure}", markup=False, style="bold red")
    if thresholds and not failures:
        console.print("all thresholds met", markup=False)


def _db(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if math.isfinite(value) else ("inf" if value > 0 else "-inf")


def _share(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _outputs_table(outputs: tuple[OutputMetrics, ...], samples: int) -> Table:
    custom = sorted({name for metrics in outputs for name in metrics.custom})
    table = Table(title=f"outputs, float vs int8 ({samples} samples)")
    for header in (
        "output",
        "SQNR dB",
        "worst slice dB",
        "cosine",
        "max abs err",
        "top-1 agree",
        "top-5 agree",
        "acc float",
        "acc int8",
        *custom,
    ):
        table.add_column(header, justify="left" if header == "output" else "right")
    for m in outputs:
        table.add_row(
            m.name,
            _db(m.sqnr_db),
            _db(m.worst_slice_sqnr_db) + (" COLLAPSED" if m.collapsed else ""),
            f"{m.cosine:.6f}",
            f"{m.max_abs_error:.4g}",
            _share(m.top1_agreement),
            _share(m.top5_agreement),
            _share(m.float_accuracy),
            _share(m.int8_accuracy),
            *[f"{m.custom[name]:.6g}" if name in m.custom else "-" for name in custom],
        )
    return table


def _worst_table(result: ValidationResult) -> Table:
    assert result.layers is not None
    table = Table(title="worst layers (lowest own SQNR first)")
    for header in ("#", "tensor", "node", "own SQNR dB", "accum. SQNR dB", "overflow", "underflow"):
        table.add_column(header, justify="left" if header in ("tensor", "node") else "right")
    for rank, report in enumerate(result.layers.ranked()[:WORST_SHOWN], start=1):
        table.add_row(
            str(rank),
            report.name,
            report.node or "(input)",
            _db(report.sqnr_own_db),
            _db(report.sqnr_accumulated_db),
            _share(report.range.overflow_fraction),
            _share(report.range.underflow_fraction),
        )
    return table


def _what_if_table(result: ValidationResult) -> Table:
    assert result.layers is not None
    first = result.outputs[0]
    table = Table(title=f"what if (output {first.name!r}; all int8: {_db(first.sqnr_db)} dB)")
    for header in (
        "tensor",
        "only this quantized: SQNR dB",
        "agree",
        "this node float: SQNR dB",
        "agree",
    ):
        table.add_column(header, justify="left" if header == "tensor" else "right")
    for entry in result.layers.what_if:
        alone, kept = entry.only_quantized[0], entry.kept_float[0]
        table.add_row(
            entry.tensor,
            _db(alone.sqnr_db),
            _share(alone.top1_agreement),
            _db(kept.sqnr_db),
            _share(kept.top1_agreement),
        )
    return table
