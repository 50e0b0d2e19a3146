"""A PyTorch module (or a saved ``ExportedProgram``) as a float ONNX model (numerics §T.1).

``export_onnx`` tries the current exporter first: ``torch.export.export`` with the batch
dimension dynamic, then ``torch.onnx.export(..., dynamo=True)`` of that program. When either
step fails it falls back to the TorchScript exporter and says why in one line; when both
fail the ``ModelError`` names the module and the op that could not be exported. Everything
stays in memory: no file is written next to the user's.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import io
import logging
import os
import re
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from eightbit.errors import ConfigError, ModelError

__all__ = [
    "TORCH_EXTRA",
    "Example",
    "Exported",
    "export_onnx",
    "import_torch",
    "is_torch_model",
    "load_exported_program",
]

log = logging.getLogger("eightbit.pytorch")

TORCH_EXTRA = "pip install 'eightbit[torch]'"
# The opset of the TorchScript fallback: the newest that exporter writes well.
TORCHSCRIPT_OPSET = 17


def import_torch(purpose: str) -> Any:
    """The ``torch`` module, or a ConfigError naming the install command."""
    try:
        return importlib.import_module("torch")
    except ImportError:
        raise ConfigError(f"{purpose} needs PyTorch: {TORCH_EXTRA}") from None


def is_torch_model(model: object) -> bool:
    """Whether ``model`` is a ``torch.nn.Module`` or an ``ExportedProgram``.

    Without torch imported no object can be one, so this never imports torch.
    """
    torch = sys.modules.get("torch")
    if torch is None:
        return False
    return isinstance(model, (torch.nn.Module, torch.export.ExportedProgram))


def load_exported_program(path: str | os.PathLike[str]) -> Any:
    """The ``ExportedProgram`` saved at ``path`` by ``torch.export.save``."""
    torch = import_torch(f"reading {os.fspath(path)!r} (a saved ExportedProgram)")
    if not Path(path).is_file():
        raise ModelError(f"model file {os.fspath(path)!r} does not exist; check the path")
    try:
        with _quiet():
            return torch.export.load(os.fspath(path))
    except Exception as error:  # torch raises many types for a bad archive
        raise ModelError(
            f"{os.fspath(path)!r} is not a program saved by torch.export.save: {_one_line(error)}"
        ) from None


@dataclass(frozen=True)
class Example:
    """The example call of ``forward``: positional ``args`` and keyword ``kwargs``."""

    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, example_inputs: object) -> Example:
        """A tensor, a tuple/list of positional inputs, or a dict of keyword inputs."""
        if isinstance(example_inputs, Example):
            return example_inputs
        if isinstance(example_inputs, Mapping):
            return cls(kwargs=dict(example_inputs))
        if isinstance(example_inputs, (tuple, list)):
            return cls(args=tuple(example_inputs))
        return cls(args=(example_inputs,))

    def named(self, module: Any) -> dict[str, Any]:
        """Every input by the name of the ``forward`` parameter it binds to."""
        names = _positional_names(module)
        if len(self.args) > len(names):
            raise ConfigError(
                f"example_inputs has {len(self.args)} positional inputs but "
                f"{type(module).__name__}.forward takes {len(names)} ({names})"
            )
        return {**dict(zip(names, self.args, strict=False)), **self.kwargs}


@dataclass(frozen=True)
class Exported:
    """The float ONNX model, which exporter made it, and why it fell back (``note``)."""

    model: onnx.ModelProto
    exporter: str
    note: str | None
    seconds: float


def export_onnx(model: Any, example: Example | None) -> Exported:
    """``model`` (an ``nn.Module`` or ``ExportedProgram``) as a float ONNX model, batch dynamic."""
    torch = import_torch("quantizing a PyTorch model")
    started = time.perf_counter()
    if isinstance(model, torch.export.ExportedProgram):
        program = model
        try:
            return Exported(_translate(torch, program), "dynamo", None, _since(started))
        except Exception as error:
            raise ModelError(_translation_failure(program, error)) from None
    if example is None:
        raise ConfigError(
            "exporting a torch.nn.Module needs example inputs: give example_inputs= or data"
        )
    example = _batch_of_two(torch, example)
    with _eval_mode(model):
        try:
            return Exported(_dynamo(torch, model, example), "dynamo", None, _since(started))
        except _ExportFailure as failure:
            reason = failure.reason
        try:
            proto = _torchscript(torch, model, example)
        except Exception as error:
            raise ModelError(
                f"cannot export {type(model).__name__} to ONNX: {reason}; the TorchScript "
                f"exporter failed too: {_one_line(error)}"
            ) from None
    note = f"exported with the TorchScript exporter: the dynamo exporter failed ({reason})"
    log.warning(note)
    return Exported(proto, "torchscript", note, _since(started))


class _ExportFailure(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _dynamo(torch: Any, module: Any, example: Example) -> onnx.ModelProto:
    named = example.named(module)
    shapes = {name: _batch_dims(torch, value, example) for name, value in named.items()}
    try:
        with _quiet():
            program = torch.export.export(
                module, example.args, dict(example.kwargs), dynamic_shapes=shapes
            )
    except Exception as error:
        raise _ExportFailure(f"torch.export: {_one_line(error)}") from None
    try:
        return _translate(torch, program)
    except Exception as error:
        raise _ExportFailure(_translation_failure(program, error)) from None


def _translate(torch: Any, program: Any) -> onnx.ModelProto:
    with _quiet(), tempfile.TemporaryDirectory() as scratch:
        # artifacts_dir: reports the exporter may write go to a scratch folder, never
        # beside the user's files.
        exported = torch.onnx.export(
            program, dynamo=True, verbose=False, optimize=True, artifacts_dir=scratch
        )
    proto: onnx.ModelProto = exported.model_proto
    return proto


def _torchscript(torch: Any, module: Any, example: Example) -> onnx.ModelProto:
    named = example.named(module)
    tensors = [name for name, value in named.items() if isinstance(value, torch.Tensor)]
    batch = _batch_size(torch, example)
    buffer = io.BytesIO()
    with _quiet():
        torch.onnx.export(
            module,
            example.args,
            buffer,
            kwargs=dict(example.kwargs) or None,
            dynamo=False,
            verbose=False,
            input_names=tensors,
            dynamic_axes={
                name: {0: "batch"}
                for name in tensors
                if named[name].ndim and named[name].shape[0] == batch
            },
            opset_version=TORCHSCRIPT_OPSET,
        )
    return onnx.load_from_string(buffer.getvalue())


def _translation_failure(program: Any, error: BaseException) -> str:
    """'module M (Type) uses op O, which has no ONNX translation', or the error's first line.

    The exporter names the node of its decomposed graph (``%bessel_j0``, target
    ``prims.bessel_j0``); the module that called it is found in ``program``'s graph by the
    node of that name, else by the node whose op names it (``aten.special_bessel_j0``).
    """
    text = " ".join(str(item) for item in (error, error.__cause__) if item is not None)
    match = re.search(r"translating node %(\w+)", text)
    if match is None:
        return f"ONNX translation: {_one_line(error)}"
    name = match.group(1)
    target = re.search(r"call_function\[target=(?:torch\.ops\.)?([\w.]+)\]", text)
    op = target.group(1) if target else name
    base = re.sub(r"_\d+$", "", name)
    nodes = list(program.graph.nodes)
    node = next((n for n in nodes if n.name == name), None) or next(
        (n for n in nodes if n.op == "call_function" and base in str(n.target)), None
    )
    where = "the model"
    stack = (node.meta.get("nn_module_stack") or {}) if node is not None else {}
    if stack:
        path, kind = list(stack.values())[-1]
        kind_name = getattr(kind, "__name__", str(kind)).rsplit(".", 1)[-1]
        where = f"module {_module_path(path)!r} ({kind_name})"
    return f"{where} uses op {op}, which has no ONNX translation"


def _module_path(path: str) -> str:
    """``L['self'].layer1._modules['0'].conv`` -> ``layer1.0.conv`` (a ``named_modules`` name)."""
    path = re.sub(r"^L\['self'\]\.?", "", path)
    path = re.sub(r"\._modules\['([^']+)'\]", r".\1", path)
    path = re.sub(r"\[(\d+)\]", r".\1", path)
    return path.strip(".") or "(top level)"


def _positional_names(module: Any) -> list[str]:
    """The names of ``forward``'s parameters that a positional input can bind to."""
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    parameters = inspect.signature(module.forward).parameters.values()
    return [p.name for p in parameters if p.kind in kinds]


def _batch_size(torch: Any, example: Example) -> int | None:
    """The first axis of the first tensor input: the batch the other inputs must share."""
    for value in (*example.args, *example.kwargs.values()):
        if isinstance(value, torch.Tensor) and value.ndim:
            return int(value.shape[0])
    return None


def _batch_of_two(torch: Any, example: Example) -> Example:
    """The example with a batch of exactly 2: torch.export fixes any dimension whose example
    is 1, so a batch of 1 is repeated; a larger one (the first batch of the data) is cut,
    since the traced graph does not depend on how many samples it saw."""
    batch = _batch_size(torch, example)
    if batch is None or batch == 2:
        return example

    def two(value: Any) -> Any:
        if isinstance(value, torch.Tensor) and value.ndim and value.shape[0] == batch:
            return torch.cat([value, value]) if batch == 1 else value[:2]
        return value

    return Example(
        tuple(two(value) for value in example.args),
        {name: two(value) for name, value in example.kwargs.items()},
    )


def _batch_dims(torch: Any, value: Any, example: Example) -> dict[int, Any] | None:
    """``{0: Dim.DYNAMIC}`` for a tensor whose first axis is the batch, else no dynamic dim."""
    if not isinstance(value, torch.Tensor):
        return None
    if value.ndim and value.shape[0] == _batch_size(torch, example):
        return {0: torch.export.Dim.DYNAMIC}
    return {}


@contextlib.contextmanager
def _eval_mode(module: Any) -> Iterator[None]:
    """The module in eval mode (dropout off, BatchNorm on its running statistics), then back."""
    training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(training)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporters' progress lines, graph dumps, warnings and log records.

    The TorchScript exporter prints its graph from C++, past ``sys.stdout``: file
    descriptors 1 and 2 point to the null device while it runs.
    """
    logger = logging.getLogger("torch")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
            _null_descriptors(),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def _null_descriptors() -> Iterator[None]:
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for descriptor in (*saved, null):
            os.close(descriptor)


def _one_line(error: BaseException | str, limit: int = 300) -> str:
    """The first line of an exporter's message (they run to pages), cut to ``limit``."""
    plain = re.sub(r"\x1b\[[0-9;]*m", "", str(error))  # the exporter's terminal colours
    lines = [line.strip() for line in plain.splitlines() if line.strip()]
    text = lines[0] if lines else type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _since(started: float) -> float:
    return time.perf_counter() - started
