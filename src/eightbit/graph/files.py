"""Reading and writing ONNX models: external data, models past 2 GiB, one clear error.

A model file may keep its weights in separate files beside it ("external data"); that is
the only way to store a model whose protobuf exceeds 2 GiB. ``load_model`` always returns
a self-contained ``ModelProto`` (weights in memory); ``save_model`` writes weights out to
``<name>.data`` when asked to or when a single file could not hold them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import onnx
from google.protobuf.message import DecodeError, EncodeError
from onnx import ModelProto, TensorProto, ValueInfoProto, external_data_helper, numpy_helper

from eightbit._io import atomic_path, atomic_write_bytes
from eightbit.errors import ModelError
from eightbit.graph._proto import (
    all_tensors,
    copy_except,
    copy_field,
    one_line,
    tensor_byte_size,
    uses_external_data,
)
from eightbit.graph._skeleton import skeleton_of

log = logging.getLogger("eightbit.graph")

PROTOBUF_LIMIT = 2**31 - 1
# Past this size ``save_model`` chooses external data on its own, leaving headroom under
# the hard protobuf limit for the graph itself.
EXTERNAL_DATA_THRESHOLD = 1_800_000_000
# Tensors smaller than this stay inside the .onnx file (onnx's own default threshold).
EXTERNAL_MIN_BYTES = 1024
# ``byte_size`` asks protobuf for the exact size below this many bytes of weights (it then
# takes milliseconds), and adds up the parts above.
EXACT_SIZE_BELOW = 16 * 2**20
# Offsets of tensors in the data file are multiples of this (cache lines, SIMD loads).
DATA_ALIGNMENT = 64
# Past this size a single-file model is written one initializer at a time
# (``write_serialized``), not from one string of its whole serialization (§C.11).
STREAM_ABOVE = 64 * 2**20


def load_model(source: str | os.PathLike[str] | ModelProto, *, check: bool = True) -> ModelProto:
    """Read a model file (weights in external data included) or copy a ``ModelProto``.

    The result holds every weight in memory; the source is never changed. With ``check``
    the model must pass the ONNX checker. Any problem is one ``ModelError`` line.
    """
    if isinstance(source, ModelProto):
        model = ModelProto()
        model.CopyFrom(source)
        origin = "the model"
        _refuse_unloaded_external_data(model, origin)
    elif isinstance(source, (str, os.PathLike)):
        model = _read(Path(source))
        origin = f"model file {os.fspath(source)!r}"
    else:
        raise ModelError(
            f"expected a path to an .onnx file or an onnx.ModelProto (got {type(source).__name__})"
        )
    if check:
        check_model(model, origin)
    return model


def check_model(model: ModelProto, origin: str = "the model") -> None:
    """Run the ONNX checker on ``model`` (any size: it checks the weightless skeleton)."""
    if model.ir_version == 0:
        raise ModelError(f"{origin} is not an ONNX model: it has no IR version")
    try:
        onnx.checker.check_model(skeleton_of(model).model)
    except (onnx.checker.ValidationError, ValueError) as error:
        raise ModelError(
            f"{origin} fails the ONNX checker: {one_line(error)}; "
            "re-export the model or repair it with the onnx tools"
        ) from None


def _read(path: Path) -> ModelProto:
    if not path.exists():
        raise ModelError(f"model file {str(path)!r} does not exist; check the path")
    if not path.is_file():
        raise ModelError(f"model path {str(path)!r} is not a file; give the .onnx file")
    try:
        model = onnx.load(os.fspath(path), load_external_data=False)
    except (DecodeError, RuntimeError, ValueError) as error:
        raise ModelError(
            f"model file {str(path)!r} is not an ONNX model (protobuf parsing failed: "
            f"{one_line(error, 120)})"
        ) from None
    except OSError as error:
        raise ModelError(f"cannot read model file {str(path)!r}: {error.strerror}") from None
    if model.ir_version == 0 and not model.HasField("graph"):
        raise ModelError(f"model file {str(path)!r} is empty or not an ONNX model")
    _load_external_data(model, path.parent)
    return model


def _load_external_data(model: ModelProto, folder: Path) -> None:
    """Read the weights that ``model`` keeps in files under ``folder``."""
    external = [tensor for tensor in all_tensors(model.graph) if uses_external_data(tensor)]
    for tensor in external:
        location = external_data_helper.ExternalDataInfo(tensor).location
        if not (folder / location).is_file():
            raise ModelError(
                f"tensor {tensor.name!r} keeps its data in {location!r}, which is missing from "
                f"{str(folder)!r}; copy the data file beside the model file"
            )
    try:
        external_data_helper.load_external_data_for_model(model, os.fspath(folder))
    except (OSError, ValueError, onnx.checker.ValidationError) as error:
        raise ModelError(
            f"cannot read the external data of the model in {str(folder)!r}: {one_line(error)}"
        ) from None
    # onnx leaves ``data_location: DEFAULT`` set explicitly; clearing it makes the loaded
    # model serialize exactly like the same model saved as a single file.
    for tensor in external:
        tensor.ClearField("data_location")


def _refuse_unloaded_external_data(model: ModelProto, origin: str) -> None:
    for tensor in all_tensors(model.graph):
        if uses_external_data(tensor):
            raise ModelError(
                f"{origin} refers to external data for tensor {tensor.name!r} that is not "
                "loaded; pass the model's file path instead, or load it with onnx.load()"
            )


def save_model(
    model: ModelProto, path: str | os.PathLike[str], *, external_data: bool | None = None
) -> None:
    """Write ``model`` atomically; with external data its weights go to ``<name>.data``.

    ``external_data=None`` chooses external data when one file could not hold the model.
    The model object is not changed.
    """
    destination = Path(path)
    _refuse_unloaded_external_data(model, "the model to save")
    size = byte_size(model)
    if external_data is None:
        external_data = size > EXTERNAL_DATA_THRESHOLD
    if not external_data:
        if size > PROTOBUF_LIMIT:
            raise ModelError(
                f"the model is {size / 2**30:.1f} GiB, over protobuf's 2 GiB limit for one "
                "file; save it with external_data=True"
            )
        if size <= STREAM_ABOVE:
            atomic_write_bytes(destination, model.SerializeToString())
            return
        with atomic_path(destination) as tmp, tmp.open("wb") as file:
            write_serialized(model, file)
        return
    data_name = destination.name + ".data"
    # The data file is renamed into place first, so the model never points at a missing file.
    with (
        atomic_path(destination) as model_tmp,
        atomic_path(destination.parent / data_name) as data_tmp,
    ):
        with data_tmp.open("wb") as data_file:
            skeleton = _write_weights(model, data_file, data_name)
        model_tmp.write_bytes(skeleton.SerializeToString())
    log.info("saved %s with weights in %s", destination, data_name)


def write_serialized(model: ModelProto, file: BinaryIO) -> None:
    """Write ``model.SerializeToString()`` to ``file`` one initializer at a time (§C.11).

    protobuf writes a message's fields in field-number order, so the model is the bytes of
    its fields before ``graph``, the graph's tag and length, the graph's fields before
    ``initializer``, each initializer as its own tag, length and bytes, then the rest:
    the same bytes as one ``SerializeToString``, never more than one weight's copy at once.
    """
    graph = model.graph
    head, tail = _split_at(model, "graph")
    graph_head, graph_tail = _split_at(graph, "initializer")
    sizes = [tensor.ByteSize() for tensor in graph.initializer]
    graph_size = len(graph_head) + len(graph_tail)
    graph_size += sum(1 + _varint_bytes(size) + size for size in sizes)
    file.write(head)
    file.write(bytes([_GRAPH_TAG]) + _varint(graph_size) + graph_head)
    for tensor, size in zip(graph.initializer, sizes, strict=True):
        file.write(bytes([_INITIALIZER_TAG]) + _varint(size))
        file.write(tensor.SerializeToString())
    file.write(graph_tail)
    file.write(tail)


# Length-delimited tags (wire type 2) of ModelProto.graph (7) and GraphProto.initializer (5).
_GRAPH_TAG, _INITIALIZER_TAG = 7 << 3 | 2, 5 << 3 | 2


def _split_at(message: Any, name: str) -> tuple[bytes, bytes]:
    """The serialized fields of ``message`` numbered below and above its field ``name``."""
    number = message.DESCRIPTOR.fields_by_name[name].number
    below, above = type(message)(), type(message)()
    for field, _ in message.ListFields():
        if field.number != number:
            part = below if field.number < number else above
            copy_field(message, part, field.name)
    return below.SerializeToString(), above.SerializeToString()


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _varint_bytes(value: int) -> int:
    return len(_varint(value))


def write_for_session(
    model: ModelProto,
    path: Path,
    extra_outputs: Sequence[ValueInfoProto] = (),
    weights: Mapping[str, TensorProto] | None = None,
) -> None:
    """Write ``model`` with external data into a private temporary folder, for ONNX Runtime.

    Not atomic and not part of ``all_or_nothing`` (whose renames wait for the end of the
    command: the session must read the file now). ``extra_outputs`` are added to the
    written graph's outputs, so exposing tensors does not copy the model. ``weights``:
    the data of stubbed initializers (name -> a tensor of the same type and shape, held
    by another model), so a model built from others need not copy their weights.
    """
    if not weights:
        _refuse_unloaded_external_data(model, "the model to run")
    data_name = path.name + ".data"
    with (path.parent / data_name).open("wb") as data_file:
        skeleton = _write_weights(model, data_file, data_name, weights or {})
    skeleton.graph.output.extend(extra_outputs)
    path.write_bytes(skeleton.SerializeToString())


def stub_of(tensor: TensorProto, name: str) -> TensorProto | None:
    """``tensor`` renamed ``name`` without its data (name, type and shape only), when a
    session's file would keep its data apart (``write_for_session`` then reads the data
    from ``tensor``, given in its ``weights``); None for a tensor too small to bother."""
    if tensor_byte_size(tensor) < EXTERNAL_MIN_BYTES or tensor.data_type == TensorProto.STRING:
        return None
    if uses_external_data(tensor):
        return None
    return TensorProto(name=name, data_type=tensor.data_type, dims=tensor.dims)


def byte_size(model: ModelProto) -> int:
    """The serialized size of ``model``: exact while its weights are small; past
    ``EXACT_SIZE_BELOW`` bytes of weights, the sum of its parts with raw payloads counted
    from their shapes (``tensor_byte_size``), which also works past protobuf's 2 GiB limit,
    where protobuf refuses to count."""
    weights = sum(tensor_byte_size(tensor) for tensor in model.graph.initializer)
    if weights < EXACT_SIZE_BELOW:
        try:
            return model.ByteSize()
        except (EncodeError, ValueError):
            pass
    graph = model.graph
    rest = [*graph.node, *graph.input, *graph.output, *graph.value_info, *model.opset_import]
    return weights + sum(part.ByteSize() for part in rest)


def _write_weights(
    model: ModelProto,
    data_file: BinaryIO,
    location: str,
    weights: Mapping[str, TensorProto] | None = None,
) -> ModelProto:
    """Copy ``model`` with its large initializers' bytes moved to ``data_file``; a stub
    named in ``weights`` gets the bytes of its tensor there."""
    weights = weights or {}
    skeleton = ModelProto()
    copy_except(model, skeleton, skipped="graph")
    copy_except(model.graph, skeleton.graph, skipped="initializer")
    for tensor in model.graph.initializer:
        source = weights.get(tensor.name, tensor)
        if tensor_byte_size(source) < EXTERNAL_MIN_BYTES or tensor.data_type == TensorProto.STRING:
            skeleton.graph.initializer.append(tensor)
            continue
        payload = _little_endian_bytes(source)
        data_file.write(b"\0" * (-data_file.tell() % DATA_ALIGNMENT))
        offset = data_file.tell()
        data_file.write(payload)
        reference = skeleton.graph.initializer.add()
        reference.name = tensor.name
        reference.data_type = tensor.data_type
        reference.dims.extend(tensor.dims)
        if tensor.doc_string:
            reference.doc_string = tensor.doc_string
        reference.data_location = TensorProto.EXTERNAL
        for key, value in (("location", location), ("offset", offset), ("length", len(payload))):
            entry = reference.external_data.add()
            entry.key, entry.value = key, str(value)
    return skeleton


def _little_endian_bytes(tensor: TensorProto) -> bytes:
    if tensor.HasField("raw_data"):
        return tensor.raw_data  # ONNX stores raw_data little-endian already
    return numpy_helper.from_array(numpy_helper.to_array(tensor)).raw_data
