"""PyTorch in: a module, an ``ExportedProgram`` or a saved ``.pt2`` as the float ONNX model.

``from_torch`` is the front end ``eightbit.quantize`` calls for a model that is not ONNX:
it reads the PyTorch data once (``data.read_batches``), exports the module with the batch
dynamic (``export.export_onnx``), writes its spatial means as ``GlobalAveragePool``
(``graph.global_pool``), and hands the pipeline the ONNX model in memory, the data
as arrays named after the model's inputs, and a ``StepReport`` saying which exporter ran.
torch is imported only here, and only when a PyTorch model or data is given.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from eightbit.errors import ConfigError
from eightbit.graph import Graph
from eightbit.graph.global_pool import spatial_means_as_global_pools
from eightbit.pytorch.data import as_arrays, example_of, is_torch_data, read_batches
from eightbit.pytorch.export import (
    TORCH_EXTRA,
    Example,
    export_onnx,
    import_torch,
    is_torch_model,
    load_exported_program,
)
from eightbit.steps import StepReport

__all__ = [
    "TORCH_EXTRA",
    "FromTorch",
    "from_torch",
    "is_exported_program_file",
    "is_torch_data",
    "is_torch_model",
    "torch_data_for",
]

EXPORTED_PROGRAM_SUFFIX = ".pt2"


@dataclass(frozen=True)
class FromTorch:
    """The exported float ONNX ``model``, the ``data`` as arrays, and the export's ``report``."""

    model: onnx.ModelProto
    data: Any
    report: StepReport


def is_exported_program_file(model: object) -> bool:
    """Whether ``model`` is a path to a ``.pt2`` file (``torch.export.save``)."""
    return (
        isinstance(model, (str, os.PathLike))
        and Path(model).suffix.lower() == EXPORTED_PROGRAM_SUFFIX
    )


def from_torch(model: Any, data: Any, example_inputs: object = None) -> FromTorch:
    """Export ``model`` (module, ExportedProgram or .pt2 path) and convert ``data`` for it.

    ``example_inputs`` (a tensor, a tuple of positional inputs or a dict of keyword inputs)
    is the call the module is exported with; by default the first batch of ``data``.
    """
    torch = import_torch("quantizing a PyTorch model")
    if is_exported_program_file(model):
        model = load_exported_program(model)
    batches = read_batches(torch, data) if _readable(data) else None
    example = _example(torch, model, example_inputs, batches)
    exported = export_onnx(model, example)
    onnx_model, pools = spatial_means_as_global_pools(exported.model)
    names = [info.name for info in Graph(onnx_model).inputs]
    arrays = data if batches is None else as_arrays(torch, batches, names)
    notes = [f"{exported.exporter} exporter; inputs {names}"]
    if pools:
        notes.append(f"{len(pools)} spatial ReduceMean written as GlobalAveragePool")
    if exported.note:
        notes.append(exported.note)
    report = StepReport("pytorch-export", exported.seconds, None, None, notes=tuple(notes))
    return FromTorch(onnx_model, arrays, report)


def torch_data_for(model: onnx.ModelProto, data: Any) -> Any:
    """PyTorch ``data`` for an ONNX ``model`` as arrays named after its inputs."""
    torch = import_torch("reading PyTorch data")
    names = [info.name for info in Graph(model).inputs]
    return as_arrays(torch, read_batches(torch, data), names)


def _readable(data: Any) -> bool:
    """Data read here: torch objects, or arrays to find the example in (not a file path)."""
    return data is not None and (
        is_torch_data(data) or isinstance(data, (np.ndarray, dict, tuple, list))
    )


def _example(torch: Any, model: Any, given: object, batches: list[Any] | None) -> Example | None:
    if isinstance(model, torch.export.ExportedProgram):
        return None  # the program was traced already; its inputs are fixed
    parameters = list(inspect.signature(model.forward).parameters)
    if isinstance(given, Mapping):  # the model's inputs in forward's order, whatever the dict's
        given = {name: given[name] for name in sorted(given, key=_order_in(parameters))}
    if given is not None:
        return _as_tensors(torch, Example.of(given))
    if not batches:
        raise ConfigError(
            "exporting a torch.nn.Module needs example inputs: give example_inputs= (a tensor, "
            "a tuple or a dict of tensors), or data as tensors, a Dataset or a DataLoader"
        )
    example = example_of(batches[0], parameters, _required(model))
    return _as_tensors(torch, Example.of(example))


def _order_in(parameters: list[str]) -> Callable[[str], int]:
    """Sort key: a name's place among ``parameters`` (unknown names last, for export to name)."""
    return lambda name: parameters.index(name) if name in parameters else len(parameters)


def _required(module: Any) -> int:
    """How many of ``forward``'s parameters have no default (labels after them are not inputs)."""
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    parameters = inspect.signature(module.forward).parameters.values()
    return sum(1 for p in parameters if p.kind in kinds and p.default is inspect.Parameter.empty)


def _as_tensors(torch: Any, example: Example) -> Example:
    def tensor(value: Any) -> Any:
        return (
            torch.from_numpy(np.array(value))  # a copy: the data may be read-only
            if isinstance(value, np.ndarray)
            else value
        )

    return Example(
        tuple(tensor(value) for value in example.args),
        {name: tensor(value) for name, value in example.kwargs.items()},
    )
