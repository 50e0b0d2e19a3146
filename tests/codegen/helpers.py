"""Compiling generated models on the host and comparing them with the integer engine.

``compile_models`` writes several generated models into one folder with a ``main`` that
picks a model by name (``./app NAME``), reads raw input bytes from stdin sample after sample
and writes raw output bytes, and compiles everything once with gcc, warnings as errors and
AddressSanitizer + UndefinedBehaviorSanitizer (any report aborts the run). ``feeds`` gives
random stored integers plus the edge cases (every element at q_min, at q_max, at the zero
point, alternating extremes); ``assert_bit_exact`` requires the C outputs to equal
``run_integers`` (the engine's fast kernels, which its tests prove equal to the naive ones).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest

from eightbit.codegen import GeneratedModel, Port, run_integers
from eightbit.codegen.c import c_type
from eightbit.codegen.c_api import Api

CFLAGS = (
    "-std=c99",
    "-O2",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-fsanitize=address,undefined",
    "-fno-sanitize-recover=all",
)
_LIMITS = {"uint8": (0, 255), "int8": (-128, 127), "int16": (-32768, 32767)}


def require_gcc() -> str:
    found = shutil.which("gcc")
    if found is None:
        pytest.skip("gcc is not installed: the generated C cannot be compiled here")
    return found


def _runner(model: GeneratedModel) -> str:
    name = model.name
    interface = model.interface
    lines = [f"static int run_{name}(void)", "{"]
    for port in interface.inputs:
        lines.append(f"    static {c_type(port.dtype)} in_{port.c_name}[{port.size}];")
    for port in interface.outputs:
        lines.append(f"    static {c_type(port.dtype)} out_{port.c_name}[{port.size}];")
    single = len(interface.inputs) == 1 and len(interface.outputs) == 1
    if not single:
        fields = ", ".join(f"in_{p.c_name}" for p in interface.inputs)
        lines.append(f"    {name}_inputs inputs = {{{fields}}};")
        fields = ", ".join(f"out_{p.c_name}" for p in interface.outputs)
        lines.append(f"    {name}_outputs outputs = {{{fields}}};")
    lines.append("    for (;;) {")
    for port in interface.inputs:
        lines.append(
            f"        if (fread(in_{port.c_name}, 1, sizeof in_{port.c_name}, stdin) "
            f"!= sizeof in_{port.c_name}) return 0;"
        )
    if single:
        call = f"{name}_run(in_{interface.inputs[0].c_name}, out_{interface.outputs[0].c_name})"
    else:
        call = f"{name}_run(&inputs, &outputs)"
    lines.append(f"        int status = {call};")
    lines.append("        if (status != 0) return 10 + status;")
    for port in interface.outputs:
        lines.append(f"        fwrite(out_{port.c_name}, 1, sizeof out_{port.c_name}, stdout);")
    lines += ["    }", "}", ""]
    return "\n".join(lines) + _boundary_runner(model)


def _boundary_runner(model: GeneratedModel) -> str:
    """``boundary_NAME(mode)``: the io helpers of the first input ("quantize": float32 in,
    stored integers out) or of the first output ("dequantize": integers in, float32 out)."""
    api = Api(model.name, model.interface.inputs, model.interface.outputs)
    x, y = model.interface.inputs[0], model.interface.outputs[0]
    return f"""
static int boundary_{model.name}(const char *mode)
{{
    static float real_in[{x.size}], real_out[{y.size}];
    static {c_type(x.dtype)} stored_in[{x.size}];
    static {c_type(y.dtype)} stored_out[{y.size}];
    if (strcmp(mode, "quantize") == 0) {{
        while (fread(real_in, sizeof real_in, 1, stdin) == 1) {{
            if ({api.quantize_name(x)}(real_in, stored_in) != 0) return 20;
            fwrite(stored_in, 1, sizeof stored_in, stdout);
        }}
        return 0;
    }}
    while (fread(stored_out, sizeof stored_out, 1, stdin) == 1) {{
        {api.dequantize_name(y)}(stored_out, real_out);
        fwrite(real_out, sizeof real_out, 1, stdout);
    }}
    return 0;
}}
"""


def compile_models(models: Sequence[GeneratedModel], folder: Path) -> Path:
    """One sanitized executable running every model of ``models`` (``./app NAME``)."""
    gcc = require_gcc()
    folder.mkdir(parents=True, exist_ok=True)
    sources = [folder / "main.c"]
    main = ["#include <stdio.h>", "#include <string.h>"]
    main += [f'#include "{m.name}.h"' for m in models]
    main.append("")
    for model in models:
        model.write(folder)
        sources += [folder / f"{model.name}.c", folder / f"{model.name}_io.c"]
        main.append(_runner(model))
    main += ["int main(int argc, char **argv)", "{", "    if (argc < 2) return 2;"]
    for model in models:
        name = model.name
        main.append(
            f'    if (strcmp(argv[1], "{name}") == 0 && argc > 2) return boundary_{name}(argv[2]);'
        )
        main.append(f'    if (strcmp(argv[1], "{name}") == 0) return run_{name}();')
    main += ["    return 3;", "}", ""]
    (folder / "main.c").write_text("\n".join(main))
    binary = folder / "app"
    command = [gcc, *CFLAGS, "-I", str(folder), *map(str, sources), "-o", str(binary)]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]
    return binary


def feeds(port: Port, count: int, seed: int) -> np.ndarray:
    """``count`` random stored-integer inputs, then the four edge cases."""
    low, high = _LIMITS[port.dtype]
    rng = np.random.default_rng(seed)
    dtype = port.params.numpy_dtype
    random = rng.integers(low, high + 1, size=(count, *port.shape)).astype(dtype)
    zero = int(port.params.zero_point)
    alternating = np.where(np.arange(port.size) % 2 == 0, low, high).reshape(port.shape)
    edges = np.stack([np.full(port.shape, v) for v in (low, high, zero)] + [alternating]).astype(
        dtype
    )
    return np.concatenate([random, edges])


def run_c(
    binary: Path, model: GeneratedModel, inputs: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Outputs of the compiled model for a batch of samples per input port (C name)."""
    interface = model.interface
    samples = len(next(iter(inputs.values())))
    stream = b"".join(
        np.ascontiguousarray(inputs[p.c_name][i]).tobytes()
        for i in range(samples)
        for p in interface.inputs
    )
    result = subprocess.run([str(binary), model.name], input=stream, capture_output=True)
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-4000:]
    data = np.frombuffer(result.stdout, dtype=np.uint8)
    per_sample = sum(p.size * p.params.numpy_dtype.itemsize for p in interface.outputs)
    assert data.size == per_sample * samples, f"{data.size} bytes for {samples} samples"
    rows = data.reshape(samples, per_sample)
    outputs, start = {}, 0
    for port in interface.outputs:
        width = port.size * port.params.numpy_dtype.itemsize
        chunk = rows[:, start : start + width].copy()
        outputs[port.c_name] = chunk.view(port.params.numpy_dtype).reshape(samples, *port.shape)
        start += width
    return outputs


def engine_outputs(
    model: GeneratedModel, inputs: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    samples = len(next(iter(inputs.values())))
    results = [
        run_integers(model.interface, {name: values[i] for name, values in inputs.items()})
        for i in range(samples)
    ]
    return {
        port.c_name: np.stack([r[port.c_name] for r in results]) for port in model.interface.outputs
    }


def assert_bit_exact(binary: Path, model: GeneratedModel, count: int = 50, seed: int = 0) -> int:
    """C == engine on ``count`` random inputs and the edge cases; the number of samples."""
    inputs = {
        port.c_name: feeds(port, count, seed + index)
        for index, port in enumerate(model.interface.inputs)
    }
    ours = run_c(binary, model, inputs)
    expected = engine_outputs(model, inputs)
    for name, values in expected.items():
        different = np.flatnonzero((ours[name] != values).reshape(len(values), -1).any(axis=1))
        assert different.size == 0, (
            f"{model.name}/{name}: {different.size} of {len(values)} samples differ "
            f"(first: sample {different[:5].tolist()})"
        )
    return len(next(iter(inputs.values())))


def run_boundary(binary: Path, model: GeneratedModel, mode: str, data: np.ndarray) -> np.ndarray:
    """The io helpers on ``data``: float32 -> first input's integers ("quantize"), or the
    first output's integers -> float32 ("dequantize")."""
    result = subprocess.run(
        [str(binary), model.name, mode],
        input=np.ascontiguousarray(data).tobytes(),
        capture_output=True,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-4000:]
    if mode == "quantize":
        port = model.interface.inputs[0]
        return np.frombuffer(result.stdout, dtype=port.params.numpy_dtype).reshape(data.shape)
    return np.frombuffer(result.stdout, dtype=np.float32).reshape(data.shape)
