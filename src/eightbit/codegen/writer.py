"""From an engine ``Program`` to the C sources of one model.

``generate`` names one C function per integer step after its ONNX node, asks the family's
emitter for its body (``emit``), decides where every tensor lives — the caller's input and
output buffers, a ``static const`` table for a constant operand, or an offset in the static
arena (``arena.plan_arena``) — and writes ``NAME.c`` (layers in execution order, then
``NAME_run``), ``NAME.h`` and ``NAME_io.c`` (``api``), and ``eightbit_runtime.h``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType

import numpy as np

from eightbit._io import atomic_write_text
from eightbit.codegen.arena import ArenaPlan, lifetimes, lower_bound, plan_arena
from eightbit.codegen.c import Table, c_type, identifier
from eightbit.codegen.c_api import Api, boundary_source, header
from eightbit.codegen.emit import Context, Layer, emitter_for
from eightbit.codegen.integer_program import Interface, Port, analyze
from eightbit.engine import Program
from eightbit.engine.kernels.conv import ConvStep
from eightbit.engine.kernels.conv_transpose import ConvTransposeStep
from eightbit.engine.kernels.gemm import MatMulStep
from eightbit.errors import ConfigError, ModelError

RUNTIME_HEADER = "eightbit_runtime.h"


@dataclass(frozen=True, eq=False)
class GeneratedModel:
    """The C sources of one model (file name -> text) and the numbers worth reporting."""

    name: str
    files: Mapping[str, str]
    interface: Interface
    arena: ArenaPlan
    weight_bytes: int  # the stored weights of Conv/Gemm/MatMul (int8: one byte each)
    table_bytes: int  # every const table: weights, biases, multipliers, lookup tables
    layers: int = 0
    aliases: Mapping[str, str] = field(default_factory=dict)
    # The most bytes alive at once if no output could take over a dying input's bytes
    # (the arena's own lower_bound counts in-place outputs once).
    tensor_lower_bound: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "files", MappingProxyType(dict(self.files)))
        object.__setattr__(self, "aliases", MappingProxyType(dict(self.aliases)))

    def write(self, folder: str | os.PathLike[str]) -> list[Path]:
        """Write every file into ``folder`` (created when missing), atomically."""
        target = Path(folder)
        if target.exists() and not target.is_dir():
            raise ConfigError(f"output {str(target)!r} is a file; codegen writes a folder")
        target.mkdir(parents=True, exist_ok=True)
        written = []
        for file_name, text in self.files.items():
            atomic_write_text(target / file_name, text)
            written.append(target / file_name)
        return written


def check_name(name: str) -> str:
    """``name`` when it can prefix C identifiers, else a ConfigError saying what can."""
    if not name.isidentifier() or not name.isascii() or name.lower().startswith("eb_"):
        raise ConfigError(
            f"model name {name!r} must be a C identifier (letters, digits, '_', not starting "
            "with a digit or 'eb_'); choose another with --name"
        )
    return name


def runtime_header() -> str:
    return resources.files("eightbit.codegen").joinpath("runtime.h").read_text(encoding="utf-8")


@dataclass(frozen=True, eq=False)
class _Placed:
    """A layer with its function name and the step it comes from."""

    function: str
    layer: Layer
    node: str
    kind: str


def generate(program: Program, name: str, source: str = "the model") -> GeneratedModel:
    """The C sources of ``program`` for a model called ``name``."""
    interface = analyze(program)
    api = Api(check_name(name), interface.inputs, interface.outputs)
    macros = [api.port_macro(p, r) for p, r in _ports(api)]
    if len(set(macros)) != len(macros):
        raise ModelError(f"input/output names collide as C macros: {macros}")
    taken = {"arena", *api.public_names()}
    functions = [identifier(step.node, taken, step.kind.lower()) for step in interface.steps]
    placed = []
    for step, function in zip(interface.steps, functions, strict=True):
        layer = emitter_for(step)(step, Context(interface, function, taken))
        placed.append(_Placed(function, layer, step.node, step.kind))
    storage = _Storage(api, interface, placed, taken)
    code = _source(api, interface, placed, storage, source)
    tables = [t for p in placed for t in p.layer.tables] + list(storage.constants.values())
    weights = sum(
        int(np.asarray(step.weight).size) * np.asarray(step.weight).itemsize
        for step in interface.steps
        if isinstance(step, ConvStep | ConvTransposeStep | MatMulStep) and step.weight is not None
    )
    summary = [
        f"{len(placed)} layers; inputs {', '.join(p.model_name for p in api.inputs)}; "
        f"outputs {', '.join(p.model_name for p in api.outputs)}",
        f"constant tables: {sum(t.nbytes for t in tables)} bytes (weights {weights})",
    ]
    files = {
        f"{name}.h": header(api, storage.arena.size, storage.arena.lower_bound, source, summary),
        f"{name}.c": code,
        f"{name}_io.c": boundary_source(api),
        RUNTIME_HEADER: runtime_header(),
    }
    return GeneratedModel(
        name,
        files,
        interface,
        storage.arena,
        weights,
        sum(t.nbytes for t in tables),
        len(placed),
        storage.aliases,
        storage.tensor_lower_bound,
    )


def _ports(api: Api) -> list[tuple[Port, str]]:
    return [(p, "input") for p in api.inputs] + [(p, "output") for p in api.outputs]


class _Storage:
    """Where each tensor lives, as a C pointer expression inside ``NAME_run``."""

    def __init__(
        self, api: Api, interface: Interface, placed: list[_Placed], taken: set[str]
    ) -> None:
        self.pointers: dict[str, str] = {}
        self.constants: dict[str, Table] = {}
        self.copies: list[tuple[str, str, int]] = []  # (to, from, elements) after the layers
        self.aliases: dict[str, str] = {}
        self.skipped: set[int] = set()  # layers whose output shares the input's bytes
        self.in_place: set[str] = set()  # outputs written over an input that dies there
        for port in api.inputs:
            self.pointers.setdefault(port.tensor, api.pointer(port, "input"))
        written = {a.tensor for p in placed for a in p.layer.arguments if a.writes}
        for port in api.outputs:
            target = api.pointer(port, "output")
            if port.tensor in self.pointers or port.tensor not in written:
                self.copies.append((target, port.tensor, port.size))
            else:
                self.pointers[port.tensor] = target
        for p in placed:
            for argument in p.layer.arguments:
                value = interface.constant(argument.tensor)
                if argument.writes or value is None or argument.tensor in self.pointers:
                    continue
                if argument.tensor not in self.constants:
                    table = Table(
                        identifier(argument.tensor, taken),
                        value.dtype.name,
                        value,
                        f"constant operand {argument.tensor}",
                    )
                    self.constants[argument.tensor] = table
        arena = {t for t in written if t not in self.pointers and t not in self.constants}
        uses = [
            (
                tuple(a.tensor for a in p.layer.arguments if not a.writes),
                tuple(a.tensor for a in p.layer.arguments if a.writes),
            )
            for p in placed
        ]
        uses.append((tuple(source for _, source, _ in self.copies), ()))
        self._share(placed, arena, uses, interface)
        sizes = {
            t: int(np.prod(interface.shapes[t], dtype=np.int64))
            * np.dtype(interface.dtypes[t]).itemsize
            for t in arena
        }
        views = {y: x for y, x in self.aliases.items() if y not in self.in_place}
        distinct = {t: size for t, size in sizes.items() if t not in views}
        # Without in-place sharing every tensor alive at a step needs its own bytes.
        self.tensor_lower_bound = lower_bound(lifetimes(uses, distinct, views))
        sizes = {t: size for t, size in sizes.items() if t not in self.aliases}
        self.arena = plan_arena(lifetimes(uses, sizes, self.aliases))
        # ``a`` points at the arena with the type most tensors have: fewest casts in NAME_run.
        # Offsets count bytes: ``a`` is a byte type, and an int16 tensor is cast from it.
        kinds = [
            c_type(interface.dtypes[t])
            for t in sorted(arena)
            if np.dtype(interface.dtypes[t]).itemsize == 1
        ]
        self.arena_type = max(sorted(set(kinds)), key=kinds.count) if kinds else "uint8_t"
        for tensor in arena:
            offset = self.arena.offsets[self._root(tensor)]
            kind = c_type(interface.dtypes[tensor])
            address = "a" if offset == 0 else f"a + {offset}"
            self.pointers[tensor] = address if kind == self.arena_type else f"({kind} *)({address})"
        for tensor, table in self.constants.items():
            self.pointers[tensor] = table.name

    def _root(self, tensor: str) -> str:
        while tensor in self.aliases:
            tensor = self.aliases[tensor]
        return tensor

    def _share(
        self,
        placed: list[_Placed],
        arena: set[str],
        uses: list[tuple[tuple[str, ...], tuple[str, ...]]],
        interface: Interface,
    ) -> None:
        """Give outputs their input's bytes, in execution order: a view (Reshape) always,
        an element-wise output (``Layer.in_place``) when that input is read no later."""
        last: dict[str, int] = {}
        for index, (reads, writes) in enumerate(uses):
            for tensor in (*reads, *writes):
                last[tensor] = index
        group_last = dict(last)  # root -> last step reading any tensor sharing its bytes
        for index, p in enumerate(placed):
            arguments = p.layer.arguments
            outputs = [a.tensor for a in arguments if a.writes]
            if len(outputs) != 1 or outputs[0] not in arena:
                continue
            y = outputs[0]
            candidates = [0] if p.layer.alias else list(p.layer.in_place)
            for position in candidates:
                x = arguments[position].tensor
                root = self._root(x)
                others = {self._root(a.tensor) for a in arguments if not a.writes and a.tensor != x}
                if x not in arena or (
                    not p.layer.alias and (group_last[root] != index or root in others)
                ):
                    continue  # x is read later, or through another name in this step
                if _itemsize(interface, x) != _itemsize(interface, y):
                    continue  # an int16 output would overrun an 8-bit input's bytes
                self.aliases[y] = x
                group_last[root] = max(group_last[root], last.get(y, index))
                if p.layer.alias:
                    self.skipped.add(index)
                else:
                    self.in_place.add(y)
                break


def _itemsize(interface: Interface, tensor: str) -> int:
    return int(np.dtype(interface.dtypes[tensor]).itemsize)


def _comment(lines: list[str]) -> str:
    cleaned = [_safe(line) for line in lines]
    if len(cleaned) == 1:
        return f"/* {cleaned[0]} */"
    return "\n".join([f"/* {cleaned[0]}", *(f" * {line}" for line in cleaned[1:]), " */"])


def _signature(placed: _Placed, interface: Interface) -> str:
    parameters = []
    for argument in placed.layer.arguments:
        kind = c_type(interface.dtypes[argument.tensor])
        qualifier = "" if argument.writes else "const "
        parameters.append(f"{qualifier}{kind} *{argument.name}")
    result = "int" if placed.layer.checks else "void"
    return f"static {result} {placed.function}({', '.join(parameters)})"


def _source(
    api: Api, interface: Interface, placed: list[_Placed], storage: _Storage, source: str
) -> str:
    lines = [
        f"/* {api.name}.c: the network of {source}, generated by eightbit: integers only.",
        " * Each layer is one function named after its ONNX node, in execution order; the",
        " * arithmetic follows the integer engine bit for bit (docs/numerics.md).",
        " */",
        f'#include "{api.name}.h"',
        f'#include "{RUNTIME_HEADER}"',
        "",
    ]
    if storage.arena.size:
        lines += [
            f"/* Tensors between layers: {storage.arena.size} bytes, offsets planned from their",
            f" * lifetimes (at most {storage.arena.lower_bound} bytes are alive at once). */",
            f"static union {{ uint8_t bytes[{api.macro}_ARENA_BYTES]; int32_t align; }} arena;",
            "",
        ]
    for table in storage.constants.values():
        lines += [table.definition(), ""]
    for index, p in enumerate(placed):
        if index in storage.skipped:
            continue
        for table in p.layer.tables:
            lines += [table.definition(), ""]
        lines.append(_comment(list(p.layer.comment)))
        lines += [_signature(p, interface), "{", p.layer.body]
        if p.layer.checks:
            lines.append("    return EB_OK;")
        lines += ["}", ""]
    lines += _run_function(api, interface, placed, storage)
    return "\n".join(lines)


def _run_function(
    api: Api, interface: Interface, placed: list[_Placed], storage: _Storage
) -> list[str]:
    body = []
    if storage.arena.size:
        kind = storage.arena_type
        cast = "" if kind == "uint8_t" else f"({kind} *)"
        body.append(f"    {kind} *const a = {cast}arena.bytes;")
    if any(p.layer.checks for p in placed):
        body.append("    int status;")
    pointers = [api.pointer(port, "input") for port in api.inputs]
    pointers += [api.pointer(port, "output") for port in api.outputs]
    if not api.single:
        body.append("    if (inputs == 0 || outputs == 0) return EB_ERROR_NULL_POINTER;")
    checks = " || ".join(f"{p} == 0" for p in pointers)
    body.append(f"    if ({checks}) return EB_ERROR_NULL_POINTER;")
    for index, p in enumerate(placed):
        tensors = [a.tensor for a in p.layer.arguments]
        if index in storage.skipped:
            body.append(f"    /* {p.kind} '{_safe(p.node)}': output shares its input's bytes */")
            continue
        call = f"{p.function}({', '.join(storage.pointers[t] for t in tensors)})"
        if p.layer.checks:
            body.append(f"    if ((status = {call}) != EB_OK) return status;")
        else:
            body.append(f"    {call};")
    for target, tensor, size in storage.copies:  # an output that is an input or another output
        source = storage.pointers[tensor]
        body.append(f"    for (int32_t i = 0; i < {size}; ++i) {target}[i] = ({source})[i];")
    body.append("    return EB_OK;")
    return [f"{api.signature()}", "{", *body, "}", ""]


def _safe(text: str) -> str:
    return text.replace("*/", "*\\/").replace("??", "? ?").replace("\n", " ")
