"""``eightbit run``: run a quantized model on the integer engine (or ONNX Runtime).

Reads samples with the calibration data readers, writes the float outputs to an ``.npz``
(atomically), and with ``--dump-dir`` every integer tensor with its format. Exit 0 on
success, 2 on bad input (including ``--strict-integer`` refusing a float node).
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import click
import numpy as np
from rich.console import Console
from rich.table import Table

from eightbit._io import all_or_nothing, atomic_write_bytes, check_outputs, output_folder
from eightbit.calibrate import open_data
from eightbit.cli.options import (
    DATA_HELP,
    image_flags,
    image_options,
    model_files,
    model_problems_first,
)
from eightbit.engine import Program, execute, prepare, require_integer_only
from eightbit.engine.dump import write_dump
from eightbit.errors import ConfigError, DataError
from eightbit.graph import Graph, load_model, make_session
from eightbit.plan import plan_path_for

ENGINES = ("integer", "onnxruntime")
# Wide enough that long tensor names are not cut when the output is not a terminal.
_PIPE_WIDTH = 200


@click.command("run")
@click.argument("model", metavar="MODEL.onnx")
@click.option("-d", "--data", required=True, metavar="DATA", help=DATA_HELP)
@click.option("-o", "--output", required=True, metavar="OUT.npz", help="Where to write outputs.")
@click.option(
    "--engine",
    type=click.Choice(ENGINES),
    default="integer",
    show_default=True,
    help="The integer engine, or ONNX Runtime running the QDQ model (for comparison).",
)
@click.option(
    "--dump-dir",
    metavar="DIR",
    help="Write every integer tensor (<name>.npy) and formats.json here (integer engine).",
)
@click.option("--strict-integer", is_flag=True, help="Refuse a model that keeps any node in float.")
@click.option(
    "--plan", metavar="PLAN", help="The model's plan (default: <stem>.plan.json beside it)."
)
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--samples", type=click.IntRange(min=1), default=None, help="Run the first N only.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="ONNX Runtime threads.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON summary object.")
@image_flags
def run(
    model: str,
    data: str,
    output: str,
    engine: str,
    dump_dir: str | None,
    strict_integer: bool,
    plan: str | None,
    batch_size: int,
    samples: int | None,
    threads: int | None,
    as_json: bool,
    **image: Any,
) -> None:
    """Run the quantized MODEL on DATA and write its outputs to OUT.npz."""
    if engine == "onnxruntime" and (dump_dir is not None or strict_integer):
        raise ConfigError("--dump-dir and --strict-integer apply to --engine integer only")
    uses_plan = engine == "integer" or strict_integer
    plan_file = (plan or plan_path_for(model)) if uses_plan else None
    check_outputs([*model_files(model), plan_file, data], files=[output], folders=[dump_dir])
    program = None
    if uses_plan:
        with model_problems_first(model):
            program = prepare(model, plan=plan)
        if strict_integer:
            require_integer_only(program)
    inputs = program.input_infos if program is not None else Graph(load_model(model)).inputs
    source = open_data(
        data, inputs, batch_size=batch_size, image=image_options(image), limit=samples
    )
    if program is not None:
        outputs, integers = _run_integer(program, source, keep=dump_dir is not None)
    else:
        outputs, integers = _run_onnxruntime(model, source, threads), {}
    if source.used == 0:
        raise DataError(f"{source.label} gave no samples; give at least one")
    with all_or_nothing():  # the outputs and the dump: both or neither
        atomic_write_bytes(output, _npz_bytes(outputs))
        if dump_dir is not None and program is not None:
            write_dump(output_folder(dump_dir), program, integers)
    _report(model, plan, engine, source.used, outputs, program, dump_dir, as_json)


def _run_integer(
    program: Program, batches: Any, *, keep: bool
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    outputs: dict[str, list[np.ndarray]] = {}
    integers: dict[str, list[np.ndarray]] = {}
    for batch in batches:

        def keep_integers(name: str, values: np.ndarray) -> None:
            integers.setdefault(name, []).append(values)

        result = execute(program, batch, observe=keep_integers if keep else None)
        for name, values in result.items():
            outputs.setdefault(name, []).append(values)
    return _joined(outputs), _joined(integers)


def _run_onnxruntime(model: str, batches: Any, threads: int | None) -> dict[str, np.ndarray]:
    session = make_session(model, threads=threads)
    names = [output.name for output in session.get_outputs()]
    outputs: dict[str, list[np.ndarray]] = {}
    for batch in batches:
        for name, values in zip(names, session.run(names, batch), strict=True):
            outputs.setdefault(name, []).append(np.asarray(values))
    return _joined(outputs)


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    save: Any = np.savez  # its stub types the keyword arrays as its own options
    save(buffer, **arrays)
    return buffer.getvalue()


def _joined(parts: dict[str, list[np.ndarray]]) -> dict[str, np.ndarray]:
    """Batches joined along the sample axis (a 0-d tensor is kept from the last batch)."""
    return {
        name: np.concatenate(arrays) if arrays[0].ndim else arrays[-1]
        for name, arrays in parts.items()
    }


def _report(
    model: str,
    plan: str | None,
    engine: str,
    samples: int,
    outputs: dict[str, np.ndarray],
    program: Program | None,
    dump_dir: str | None,
    as_json: bool,
) -> None:
    float_nodes = [] if program is None else list(program.float_nodes)
    summary: dict[str, Any] = {
        "model": model,
        "plan": None if program is None else os.fspath(plan or plan_path_for(model)),
        "engine": engine,
        "samples": samples,
        "outputs": {name: list(values.shape) for name, values in outputs.items()},
        "float_nodes": [
            {"name": node.name, "op_type": node.op_type, "reason": node.reason}
            for node in float_nodes
        ],
        "dump_dir": None if dump_dir is None else os.fspath(Path(dump_dir)),
    }
    if as_json:
        click.echo(json.dumps(summary))
        return
    console = Console(highlight=False)
    if not console.is_terminal:
        console.width = max(console.width, _PIPE_WIDTH)
    console.print(f"ran {samples} sample(s) of {model} on the {engine} engine")
    for name, values in outputs.items():
        console.print(f"  output {name}: shape {values.shape}")
    if program is not None and not float_nodes:
        console.print("  integer only: no node computes in float")
    if float_nodes:
        table = Table(title=f"{len(float_nodes)} node(s) kept in float")
        for column in ("node", "op", "reason"):
            table.add_column(column)
        for node in float_nodes:
            table.add_row(node.name, node.op_type, node.reason)
        console.print(table)
    if dump_dir is not None:
        console.print(f"  integer tensors and formats.json written to {dump_dir}")
