"""Running models with ONNX Runtime: sessions, and models that expose inner tensors.

Calibration runs the float model with every activation exposed as an output; validation
runs float and QDQ models side by side. Both go through ``make_session`` so that thread
use, optimization level and large-model handling are decided in one place.
"""

from __future__ import annotations

import difflib
import functools
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
import onnxruntime as ort
from onnx import ModelProto, TensorProto, ValueInfoProto, helper, numpy_helper
from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

from eightbit.errors import ConfigError, ModelError
from eightbit.graph._proto import one_line, tensor_type_of
from eightbit.graph._skeleton import skeleton_of
from eightbit.graph.files import byte_size, write_for_session

log = logging.getLogger("eightbit.graph")

Optimization = Literal["all", "basic", "none"]

_OPTIMIZATION_LEVELS = {
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
}

_ORT_LOAD_ERRORS = (
    ort_errors.Fail,
    ort_errors.InvalidArgument,
    ort_errors.InvalidGraph,
    ort_errors.InvalidProtobuf,
    ort_errors.NoSuchFile,
    ort_errors.NotImplemented,
    ort_errors.RuntimeException,
)

# On x86 CPUs without VNNI (AVX2, AVX-512 without VNNI) ONNX Runtime's default u8 x s8
# kernels add pairs of products in 16 bits with saturation, so an int8 model's outputs
# depend on the CPU (docs/numerics.md §1.9). This session option makes those CPUs use the
# exact u8 x u8 kernels. Where the default kernels are exact already (VNNI) it changes no
# output but still routes layers to the slower u8 x u8 kernels, so it is set only where
# the probe below finds saturation.
EXACT_INT8_ENTRY = ("session.x64quantprecision", "1")


# A QLinearConv whose 8 products 255 x 127 sum exactly to 259,080, i.e. 255 after the output
# scale of 1000 and uint8 saturation; summed as 4 pairs clamped to 16 bits it gives 131.
SATURATION_PROBE_CHANNELS = 8
SATURATION_PROBE_INPUT = np.full((1, SATURATION_PROBE_CHANNELS, 1, 1), 255, np.uint8)


def saturation_probe() -> ModelProto:
    """The model that tells exact u8 x s8 sums (output 255) from saturated ones (131)."""
    shape = [1, SATURATION_PROBE_CHANNELS, 1, 1]
    constants = {
        "xs": np.float32(1.0),
        "xz": np.uint8(0),
        "w": np.full(shape, 127, np.int8),
        "ws": np.float32(1.0),
        "wz": np.int8(0),
        "ys": np.float32(1000.0),
        "yz": np.uint8(0),
    }
    node = helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"])
    graph = helper.make_graph(
        [node],
        "saturation_probe",
        [helper.make_tensor_value_info("x", onnx.TensorProto.UINT8, shape)],
        [helper.make_tensor_value_info("y", onnx.TensorProto.UINT8, [1, 1, 1, 1])],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in constants.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@functools.cache
def default_int8_kernels_saturate() -> bool:
    """Whether ONNX Runtime's *default* session on this CPU saturates u8 x s8 sums.

    True on x86 CPUs without VNNI: a user who opens an int8 model there without
    ``EXACT_INT8_ENTRY`` gets other outputs than eightbit measured (docs/numerics.md §1.9).
    """
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(
        saturation_probe().SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    y = session.run(None, {"x": SATURATION_PROBE_INPUT})[0]
    return int(np.asarray(y).ravel()[0]) != 255


# Past this many bytes a model reaches ONNX Runtime through a file with external data, not
# one protobuf string (which also could not pass protobuf's 2 GiB limit): the string (a copy
# of every weight) and ORT's parse of it (another) would be held at once, beside the
# weights ORT keeps. Same graph, same outputs (docs/design.md, "Memory").
SESSION_FILE_BYTES = 64 * 2**20


def through_file(*models: ModelProto) -> bool:
    """Whether a session built from ``models`` (together) reaches ONNX Runtime as a file."""
    return sum(byte_size(model) for model in models) > SESSION_FILE_BYTES


def make_session(
    model: ModelProto | str | os.PathLike[str],
    *,
    threads: int | None = None,
    optimized_model_path: str | os.PathLike[str] | None = None,
    optimization: Optimization = "all",
    lean: bool = False,
    weights: Mapping[str, TensorProto] | None = None,
    prepack: bool = True,
) -> ort.InferenceSession:
    """A CPU ``InferenceSession`` running nodes one at a time on ``threads`` threads.

    ``threads=None`` lets ONNX Runtime choose. ``optimized_model_path`` saves the graph as
    ONNX Runtime optimized it (to see which nodes it fused or ran in int8). ``lean`` is for
    sessions that expose many tensors while other work shares the cores (calibration): no
    memory pattern (it pre-plans one arena for every exposed output) and no thread spinning.
    ``weights``: the data of ``model``'s stubbed initializers (``stub_weights``), read from
    the models that hold them as the session's file is written. ``prepack=False``: the
    kernels read their weights where they are, not from a packed copy: from a file with
    external data, ONNX Runtime maps the weights in instead of holding a copy while it
    packs (C.9.3; float sums in another order).
    """
    options = _session_options(threads, optimized_model_path, optimization)
    if lean:
        _make_lean(options)
    if not prepack:
        options.add_session_config_entry("session.disable_prepacking", "1")
    if isinstance(model, ModelProto):
        if weights:
            return _open_through_file(model, options, weights=weights)
        if byte_size(model) <= SESSION_FILE_BYTES:
            return _open(model.SerializeToString(), options, "the model")
        return _open_through_file(model, options)
    path = Path(model)
    if not path.is_file():
        raise ModelError(f"model file {str(path)!r} does not exist; check the path")
    return _open(os.fspath(path), options, f"model file {str(path)!r}")


def handed_session(model: ModelProto, *, threads: int | None = None) -> ort.InferenceSession:
    """``make_session(model, threads=threads)`` for a caller that hands ``model`` over
    (keeps no reference to it): a big one is written to the session's file and let go
    before ONNX Runtime opens it, so its proto and ONNX Runtime's copy (with the packed
    weights ONNX Runtime makes as it opens) are never held at once (§C.11)."""
    if not through_file(model):
        return make_session(model, threads=threads)
    options = _session_options(threads, None, "all")
    with tempfile.TemporaryDirectory(prefix="eightbit-", ignore_cleanup_errors=True) as tmp:
        path = Path(tmp) / "model.onnx"
        write_for_session(model, path)
        del model
        return _open(os.fspath(path), options, "the model")


def session_with_arrays(
    model: ModelProto,
    arrays: Mapping[str, np.ndarray],
    *,
    threads: int | None = None,
    optimization: Optimization = "all",
) -> ort.InferenceSession:
    """A session of ``model`` whose initializers ``arrays`` (absent from ``model``) ONNX
    Runtime reads from these numpy buffers, not from a copy in a protobuf or a file.

    How a step runs a big constant it computed (bias correction's ΔW) without serializing
    it: the proto only declares each one, as external data that is never read. The arrays
    are kept alive with the session. ONNX Runtime (1.32) still copies them into the
    session as it opens (a 64 MB array adds about 73 MB): no protobuf or file copy, but
    not zero copies (bias correction sums its largest shifts in numpy instead, §I.3.1).
    """
    declared = ModelProto()
    declared.CopyFrom(model)
    values = []
    for name, array in arrays.items():
        array = np.ascontiguousarray(array)
        stub = declared.graph.initializer.add(
            name=name, data_type=helper.np_dtype_to_tensor_dtype(array.dtype), dims=array.shape
        )
        stub.data_location = TensorProto.EXTERNAL
        for key, value in (("location", "in-memory"), ("offset", "0"), ("length", array.nbytes)):
            entry = stub.external_data.add()
            entry.key, entry.value = key, str(value)
        values.append(ort.OrtValue.ortvalue_from_numpy(array))
    options = _session_options(threads, None, optimization)
    options.add_external_initializers(list(arrays), values)
    session = _open(declared.SerializeToString(), options, "the model")
    session.eightbit_arrays = values  # ONNX Runtime may read them as long as it runs
    return session


def exposing_session(
    model: ModelProto,
    names: Sequence[str],
    *,
    threads: int | None = None,
    optimization: Optimization = "all",
    lean: bool = False,
    folder: Path | None = None,
) -> ort.InferenceSession:
    """``make_session(with_outputs(model, names), ...)`` without the copy of the weights.

    A large model goes to ONNX Runtime through a file whose graph gets the new outputs as
    it is written, so the only copies of its weights are ``model``'s and ONNX Runtime's.
    ``folder``: where the external data ``model`` refers to is (a model file read without
    its weights, §C.11): the session's graph is written beside it, and ONNX Runtime's are
    then the only copy of the weights in memory.
    """
    if folder is None and byte_size(model) <= SESSION_FILE_BYTES:
        exposed = with_outputs(model, names)
        return make_session(exposed, threads=threads, optimization=optimization, lean=lean)
    outputs = _exposed_outputs(model, names)
    options = _session_options(threads, None, optimization)
    if lean:
        _make_lean(options)
    if folder is not None:
        return _open_beside(model, folder, options, outputs)
    return _open_through_file(model, options, outputs)


def _open_through_file(
    model: ModelProto,
    options: ort.SessionOptions,
    outputs: Sequence[ValueInfoProto] = (),
    weights: Mapping[str, TensorProto] | None = None,
) -> ort.InferenceSession:
    """A session read from a temporary file with external data, removed once it is open."""
    with tempfile.TemporaryDirectory(prefix="eightbit-", ignore_cleanup_errors=True) as tmp:
        path = Path(tmp) / "model.onnx"
        write_for_session(model, path, outputs, weights)
        return _open(os.fspath(path), options, "the model")


def _open_beside(
    skeleton: ModelProto,
    folder: Path,
    options: ort.SessionOptions,
    outputs: Sequence[ValueInfoProto],
) -> ort.InferenceSession:
    """A session of ``skeleton`` (its weights external data in ``folder``) with ``outputs``
    added, from a graph file written into ``folder`` and removed once the session is open."""
    graph = ModelProto()
    graph.CopyFrom(skeleton)  # weightless: a few hundred kB
    graph.graph.output.extend(outputs)
    with tempfile.NamedTemporaryFile(dir=folder, suffix=".onnx", delete=False) as file:
        file.write(graph.SerializeToString())
    try:
        return _open(file.name, options, "the model")
    finally:
        Path(file.name).unlink(missing_ok=True)


def _make_lean(options: ort.SessionOptions) -> None:
    options.enable_mem_pattern = False
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")


# Whether this process's sessions take their memory from one arena they share (``share_arena``).
_ARENA = {"registered": False, "shared": False}
_ENV_ALLOCATORS = ("session.use_env_allocators", "1")


def share_arena() -> None:
    """From now on, every session this process opens takes its memory from one CPU arena
    registered with ONNX Runtime's environment, kept between sessions. A process that opens
    one session per task (a Ray worker scoring candidates) then reuses pages the last session
    touched instead of faulting in fresh ones (~300 MB for MobileNetV2's float layers at a
    batch of 16): where each session is its own arena, the memory goes back to the system
    when the session ends. The arena holds the largest a session needed; outputs unchanged."""
    if not _ARENA["registered"]:
        info = ort.OrtMemoryInfo(
            "Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT
        )
        ort.create_and_register_allocator(info, None)
        _ARENA["registered"] = True
    _ARENA["shared"] = True


def _session_options(
    threads: int | None,
    optimized_model_path: str | os.PathLike[str] | None,
    optimization: str,
) -> ort.SessionOptions:
    if optimization not in _OPTIMIZATION_LEVELS:
        raise ConfigError(
            f"'optimization' must be one of {sorted(_OPTIMIZATION_LEVELS)} (got {optimization!r})"
        )
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"'threads' must be a positive integer or None (got {threads!r})")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or 0  # 0: ONNX Runtime's own choice
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = _OPTIMIZATION_LEVELS[optimization]
    options.log_severity_level = 3  # errors only; warnings about unused initializers are noise
    if default_int8_kernels_saturate():  # elsewhere the option only slows the kernels (§1.9)
        options.add_session_config_entry(*EXACT_INT8_ENTRY)
    if optimized_model_path is not None:
        options.optimized_model_filepath = os.fspath(optimized_model_path)
    if _ARENA["shared"]:
        options.add_session_config_entry(*_ENV_ALLOCATORS)
    return options


def _open(source: bytes | str, options: ort.SessionOptions, origin: str) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except _ORT_LOAD_ERRORS as error:
        raise ModelError(f"ONNX Runtime cannot load {origin}: {one_line(error)}") from None


def with_outputs(model: ModelProto, names: Sequence[str]) -> ModelProto:
    """A copy of ``model`` that also returns the tensors ``names`` as graph outputs.

    Each new output carries the tensor's known type and shape; a tensor whose type even
    shape inference cannot tell gets an untyped output, which ONNX Runtime resolves.
    """
    outputs = _exposed_outputs(model, names)
    exposed = ModelProto()
    exposed.CopyFrom(model)
    exposed.graph.output.extend(outputs)
    return exposed


def _exposed_outputs(model: ModelProto, names: Sequence[str]) -> list[ValueInfoProto]:
    """The graph outputs ``with_outputs`` adds: typed where the type is known."""
    graph = model.graph
    present = {value.name for value in graph.output}
    wanted = [name for name in dict.fromkeys(names) if name not in present]
    defined = {value.name for value in graph.input} | {t.name for t in graph.initializer}
    defined.update(name for node in graph.node for name in node.output)
    unknown = [name for name in wanted if name not in defined]
    if unknown:
        close = difflib.get_close_matches(unknown[0], defined, n=3)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ModelError(f"the model has no tensor named {unknown[0]!r}{hint}")
    declared = _declared_types(model)
    if any(name not in declared for name in wanted):
        declared.update(_inferred_types(model))
    return [declared.get(name) or helper.make_empty_tensor_value_info(name) for name in wanted]


def _declared_types(model: ModelProto) -> dict[str, ValueInfoProto]:
    graph = model.graph
    found = {
        value.name: value
        for value in [*graph.value_info, *graph.input, *graph.output]
        if tensor_type_of(value) is not None
    }
    for tensor in graph.initializer:
        found[tensor.name] = helper.make_tensor_value_info(
            tensor.name, tensor.data_type, list(tensor.dims)
        )
    return found


def _inferred_types(model: ModelProto) -> dict[str, ValueInfoProto]:
    """Types of intermediate tensors from shape inference (run on the weightless skeleton)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(skeleton_of(model).model)
    except (onnx.shape_inference.InferenceError, RuntimeError, ValueError) as error:
        log.debug("shape inference failed while exposing outputs: %s", one_line(error))
        return {}
    return {
        value.name: value
        for value in inferred.graph.value_info
        if tensor_type_of(value) is not None
    }
