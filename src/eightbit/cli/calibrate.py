"""``eightbit calibrate``: observe a model's activations on data and save their ranges."""

from __future__ import annotations

import functools
import json
import time
from typing import TYPE_CHECKING, Any, cast

import click

from eightbit._io import all_or_nothing, check_outputs
from eightbit.calibrate import CalibrationConfig, Ranges
from eightbit.calibrate import calibrate as calibrate_model
from eightbit.cli.options import (
    DATA_HELP,
    image_flags,
    image_options,
    model_files,
    ray_option,
    require_ray,
)
from eightbit.graph import Graph, normalize
from eightbit.graph.quantized import load_float_model
from eightbit.plan import activation_tensors_to_calibrate
from eightbit.quant import QuantConfig

if TYPE_CHECKING:
    from eightbit.calibrate.config import Method


def _clipped(ranges: Ranges, name: str) -> float | None:
    histogram = ranges.histogram(name)
    if histogram is None:
        return None
    chosen = ranges[name]
    return histogram.fraction_outside(chosen.min, chosen.max)


def _print_table(ranges: Ranges, top: int) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"widest {ranges.method} ranges ({len(ranges)} tensors, {ranges.samples} samples)",
        title_justify="left",
    )
    for column in ("tensor", "min", "max", "observed min", "observed max", "clipped"):
        table.add_column(column, justify="left" if column == "tensor" else "right")
    for name, chosen in ranges.widest(top):
        clipped = _clipped(ranges, name)
        table.add_row(
            name,
            f"{chosen.min:.6g}",
            f"{chosen.max:.6g}",
            f"{chosen.observed_min:.6g}",
            f"{chosen.observed_max:.6g}",
            "—" if clipped is None else f"{clipped:.4%}",
        )
    Console().print(table)


@click.command(name="calibrate")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option(
    "-d",
    "--data",
    required=True,
    help=DATA_HELP,
)
@click.option("-o", "--output", required=True, help="Ranges file to write (JSON).")
@click.option(
    "--method",
    default="percentile",
    show_default=True,
    help="Range selection: minmax, percentile, entropy or mse.",
)
@click.option(
    "--percentile",
    type=float,
    default=99.99,
    show_default=True,
    help="percentile: share of values kept below the upper end.",
)
@click.option("--samples", type=int, help="Use at most this many samples.")
@click.option(
    "--batch-size",
    type=int,
    default=16,
    show_default=True,
    help="Samples per run (a model with a fixed batch takes its own).",
)
@click.option("--bins", type=int, default=2048, show_default=True, help="Least histogram bins.")
@click.option("--bits", type=int, default=8, show_default=True, help="Grid for entropy/mse.")
@click.option("--moving-average", type=float, help="minmax: average batch extremes with this rate.")
@click.option(
    "--skip-nonfinite", is_flag=True, help="Skip samples with NaN/inf instead of failing."
)
@click.option("--threads", type=int, help="Threads for ONNX Runtime and the observers.")
@image_flags
@click.option(
    "--all-tensors",
    is_flag=True,
    help="Observe every float activation, not only those eightbit quantize reads "
    "(slower: exposing a Conv output stops ONNX Runtime fusing it with its Relu).",
)
@click.option(
    "--top", type=click.IntRange(min=1), default=10, show_default=True, help="Rows in the table."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@ray_option
def calibrate(
    model: str,
    data: str,
    output: str,
    method: str,
    percentile: float,
    samples: int | None,
    batch_size: int,
    bins: int,
    bits: int,
    moving_average: float | None,
    skip_nonfinite: bool,
    threads: int | None,
    all_tensors: bool,
    top: int,
    as_json: bool,
    ray: str | None,
    **image_values: Any,
) -> None:
    """Run MODEL on sample data and save the ranges eightbit quantize needs.

    Every tensor the quantizer reads (the same set for every scheme) is observed; with
    --exclude or --op-types at quantize time a few more may be needed: calibrate with
    --all-tensors then.
    """
    require_ray(ray)
    check_outputs([*model_files(model), data], files=[output, Ranges.sidecar_path(output)])
    config = CalibrationConfig(
        method=cast("Method", method),  # CalibrationConfig validates it
        percentile=percentile,
        bins=bins,
        batch_size=batch_size,
        samples=samples,
        skip_nonfinite=skip_nonfinite,
        moving_average=moving_average,
        bits=bits,
    )
    image = image_options(image_values)
    started = time.perf_counter()
    prepared = normalize(load_float_model(model))
    tensors = (
        None if all_tensors else activation_tensors_to_calibrate(Graph(prepared), QuantConfig())
    )
    with all_or_nothing():  # the ranges and their histograms: both or neither
        ranges = (calibrate_model if ray is None else _on_ray(ray))(
            prepared,
            data,
            config,
            tensors=tensors,
            threads=threads,
            image=image,
            progress=not as_json,
            normalized=True,
        )
        seconds = time.perf_counter() - started
        ranges.save(output)
    has_histograms = any(ranges.histogram(name) is not None for name in ranges)
    if as_json:
        summary = {
            "output": output,
            "histograms": str(Ranges.sidecar_path(output)) if has_histograms else None,
            "method": ranges.method,
            "samples": ranges.samples,
            "skipped": ranges.skipped,
            "tensors": len(ranges),
            "seconds": round(seconds, 3),
            "samples_per_second": round(ranges.samples / seconds, 2),
            "widest": [
                {
                    "name": name,
                    "min": chosen.min,
                    "max": chosen.max,
                    "observed_min": chosen.observed_min,
                    "observed_max": chosen.observed_max,
                    "clipped": _clipped(ranges, name),
                }
                for name, chosen in ranges.widest(top)
            ],
        }
        click.echo(json.dumps(summary))
        return
    _print_table(ranges, top)
    skipped = f", skipped {ranges.skipped} with NaN/inf" if ranges.skipped else ""
    click.echo(
        f"calibrated {len(ranges)} tensors on {ranges.samples} samples{skipped} in "
        f"{seconds:.1f} s ({ranges.samples / seconds:.1f} samples/s); wrote {output}"
    )


def _on_ray(address: str) -> Any:
    from eightbit.distributed import calibrate_on_ray

    return functools.partial(calibrate_on_ray, ray=address)
