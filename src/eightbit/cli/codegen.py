"""``eightbit codegen``: C99 sources of a quantized model for microcontrollers.

Reads the quantized model with its plan (``<stem>.plan.json`` beside it), prepares the
engine's integer program and writes ``NAME.h``, ``NAME.c``, ``NAME_io.c`` and
``eightbit_runtime.h`` into the output folder. Exit 0 on success, 2 when the model cannot
become C (a float fallback node, an op without an emitter: the message lists what is
supported) or on bad usage.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from eightbit._io import all_or_nothing, check_outputs, output_folder
from eightbit.cli.options import model_files, model_problems_first
from eightbit.codegen import GeneratedModel, check_name, generate_c
from eightbit.codegen.c import identifier
from eightbit.codegen.writer import RUNTIME_HEADER
from eightbit.plan import plan_path_for


def default_name(model: str) -> str:
    """A C identifier from the model file's stem (``mnist_int8.onnx`` -> ``mnist_int8``)."""
    stem = Path(model).stem
    if stem.lower().startswith("eb_"):  # the runtime's prefix
        stem = f"model_{stem}"
    return identifier(stem, set(), "model")


def source_files(name: str) -> list[str]:
    """The files codegen writes for a model named ``name`` (``generate`` names them so)."""
    return [f"{name}.h", f"{name}.c", f"{name}_io.c", RUNTIME_HEADER]


@click.command("codegen")
@click.argument("model", metavar="MODEL.onnx")
@click.option("-o", "--output", required=True, metavar="DIR", help="Folder for the C sources.")
@click.option("--name", metavar="NAME", help="Prefix of the C API (default: the model's stem).")
@click.option(
    "--plan", metavar="PLAN", help="The model's plan (default: <stem>.plan.json beside it)."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON summary object.")
def codegen_command(
    model: str, output: str, name: str | None, plan: str | None, as_json: bool
) -> None:
    """Write the quantized MODEL as C99 sources into DIR, bit-exact with the engine."""
    chosen = check_name(name) if name is not None else default_name(model)
    check_outputs(
        [*model_files(model), plan or plan_path_for(model)],
        files=[Path(output) / file_name for file_name in source_files(chosen)],
        folders=[output],
        inputs_inside_folders=False,
    )
    with model_problems_first(model):
        generated = generate_c(model, chosen, plan=plan)
    with all_or_nothing():  # every file of the C sources, or none
        written = generated.write(output_folder(output))
    _report(model, plan, generated, written, as_json)


def summary(generated: GeneratedModel) -> dict[str, Any]:
    """The numbers of a generated model, as ``--json`` prints them."""
    interface = generated.interface

    def port(p: Any) -> dict[str, Any]:
        return {
            "name": p.model_name,
            "c_name": p.c_name,
            "dtype": p.dtype,
            "shape": list(p.shape),
            "scale": float(p.params.scale),
            "zero_point": int(p.params.zero_point),
        }

    return {
        "name": generated.name,
        "layers": generated.layers,
        "inputs": [port(p) for p in interface.inputs],
        "outputs": [port(p) for p in interface.outputs],
        "arena_bytes": generated.arena.size,
        "arena_lower_bound": generated.arena.lower_bound,
        "weight_bytes": generated.weight_bytes,
        "table_bytes": generated.table_bytes,
    }


def _report(
    model: str,
    plan: str | None,
    generated: GeneratedModel,
    written: list[Path],
    as_json: bool,
) -> None:
    result = summary(generated)
    result["model"] = model
    result["plan"] = os.fspath(plan or plan_path_for(model))
    result["files"] = [os.fspath(path) for path in written]
    if as_json:
        click.echo(json.dumps(result))
        return
    console = Console(highlight=False)
    console.print(f"wrote {len(written)} files for {generated.name} ({result['layers']} layers)")
    table = Table(show_header=True)
    for column in ("file", "bytes"):
        table.add_column(column)
    for path in written:
        table.add_row(os.fspath(path), str(path.stat().st_size))
    console.print(table)
    console.print(
        f"  arena: {result['arena_bytes']} bytes (tensors alive at once: at most "
        f"{result['arena_lower_bound']})"
    )
    console.print(
        f"  constant tables: {result['table_bytes']} bytes, of which weights "
        f"{result['weight_bytes']}"
    )
    for p in generated.interface.inputs + generated.interface.outputs:
        console.print(
            f"  {p.model_name}: {p.dtype} {list(p.shape)}, scale {float(p.params.scale):.9g}, "
            f"zero point {int(p.params.zero_point)}"
        )
