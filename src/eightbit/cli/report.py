"""``eightbit report``: one self-contained HTML page of what int8 cost, and where."""

from __future__ import annotations

import os
import webbrowser
from pathlib import Path
from typing import Any

import click

from eightbit._io import check_outputs
from eightbit.cli.options import model_files, require_ray
from eightbit.cli.validate import data_options, data_passes, run_options
from eightbit.plan import plan_path_for
from eightbit.report import build_report, write_report


@click.command("report")
@click.argument("float_model", metavar="FLOAT.onnx")
@click.argument("int8_model", metavar="INT8.onnx")
@data_options
@click.option("-o", "--output", required=True, metavar="REPORT.html", help="The page to write.")
@click.option(
    "--plan",
    metavar="PLAN",
    help="eightbit plan of the int8 model (default: <int8 stem>.plan.json beside it, if any).",
)
@click.option("--title", default=None, help="Page title (default: names the int8 model).")
@click.option(
    "--latency-runs",
    type=click.IntRange(min=0),
    default=20,
    show_default=True,
    help="Timed runs of each model for the latency summary (0: none).",
)
@click.option(
    "--open",
    "open_page",
    is_flag=True,
    help="Open the page in the default web browser when there is one (else just say where it is).",
)
def report_command(
    float_model: str,
    int8_model: str,
    output: str,
    plan: str | None,
    title: str | None,
    latency_runs: int,
    open_page: bool,
    **params: Any,
) -> None:
    """Write an HTML report comparing INT8.onnx (a QDQ model) with FLOAT.onnx.

    Summary (size, agreement, accuracy, latency); charts of SQNR along the network's
    depth, per output slice, and what keeping the worst nodes in float would buy; the
    worst tensors' histograms; per-layer table (SQNR, overflow, underflow, fallback
    reasons), log2 histograms of every quantized tensor, and the plan's decisions when
    <int8 stem>.plan.json lies beside the int8 model. --open shows it in a browser.
    """
    require_ray(params["ray"])
    options = run_options(params)
    default_plan = plan_path_for(int8_model)
    check_outputs(
        [
            *model_files(float_model, int8_model),
            params["data"],
            params["labels"],
            plan,
            default_plan if plan is None and default_plan.is_file() else None,
        ],
        files=[output],
    )
    data = build_report(
        float_model,
        int8_model,
        params["data"],
        labels=params["labels"],
        plan=plan,
        title=title,
        what_if=params["what_if"],
        latency_runs=latency_runs,
        options=options,
        passes=data_passes(params, options),
    )
    write_report(data, output)
    first = data.summary.outputs[0]
    agreement = (
        ""
        if first.top1_agreement is None
        else f", top-1 agreement {100 * first.top1_agreement:.2f}%"
    )
    click.echo(
        f"wrote {output}: {len(data.layers)} layers, parameters "
        f"{data.summary.saved_percent:.1f}% smaller{agreement}"
    )
    if open_page:
        if open_in_browser(output):
            click.echo(f"opened {output} in the web browser")
        else:
            click.echo(f"no web browser found here: open {output} yourself")


def open_in_browser(path: str | os.PathLike[str]) -> bool:
    """Open the file at ``path`` with ``webbrowser``; False, never an error, when no browser
    exists or none starts (a server, a container, CI)."""
    try:
        webbrowser.get()  # raises webbrowser.Error when no browser is registered at all
        return bool(webbrowser.open(Path(path).resolve().as_uri()))
    except (webbrowser.Error, OSError):
        return False
