"""Section "codegen": what the generated C costs on a Cortex-M4 (issue 7).

For the MNIST demo CNN (``examples/mnist/mnist_cnn.onnx``, its 256 calibration images from
``examples/mnist/data.py``) and MobileNetV2 (the 128 calibration crops), each under the affine
(uint8) and pow2 (int8) schemes: ``eightbit.codegen.generate_c`` writes the C into
``_work/codegen/NAME/``; the model's object is cross-compiled with
``arm-none-eabi-gcc -mcpu=cortex-m4 -mthumb -Os -std=c99 -c`` and ``arm-none-eabi-size`` says
what it takes: flash = text + data (code and const tables), RAM = data + bss (the arena).

The arena is compared with its lower bound, the most bytes alive at once
(``NAME_ARENA_LOWER_BOUND``, docs/numerics.md §G.5): no placement of the tensors in one
buffer can be smaller. The C is also compiled for the host (``gcc -std=c99 -O2``) and run on a
few real inputs; its outputs must equal the integer engine's bit for bit (the codegen tests
check far more inputs under sanitizers; this row checks the very files measured here).
"""

from __future__ import annotations

import functools
import importlib.util
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from benchmarks import engine, images, models
from benchmarks.report import Table

ROOT = Path(__file__).resolve().parent.parent
WORK = images.WORK_DIR / "codegen"
MNIST_MODEL = ROOT / "examples" / "mnist" / "mnist_cnn.onnx"
MNIST_DATA = ROOT / "examples" / "mnist" / "data.py"
SCHEMES = engine.SCHEMES
HOST_SAMPLES = 4  # real inputs run through the host-compiled C
CROSS_CC = "arm-none-eabi-gcc"
CROSS_SIZE = "arm-none-eabi-size"
# As in mcu/mcu.mk for the model object (without -ffunction-sections, which only moves code
# between sections): what the flash figure is measured with.
CROSS_FLAGS = ("-mcpu=cortex-m4", "-mthumb", "-Os", "-std=c99", "-Wall", "-Wextra", "-Werror")
HOST_FLAGS = ("-std=c99", "-O2", "-Wall", "-Wextra", "-Werror")
COMPILE_TIMEOUT = 900.0  # MobileNetV2's 3.5 MB of const tables take a while to compile


@dataclass(frozen=True)
class Case:
    """One network: its label, a C-friendly name, and how to get its quantized model."""

    label: str
    name: str
    quantize: Callable[[str], Any]  # scheme -> eightbit QuantizedModel
    samples: Callable[[], np.ndarray]  # real inputs for the host check, NCHW float32


# --------------------------------------------------------------------------------------------
# The networks
# --------------------------------------------------------------------------------------------


@functools.cache
def _mnist_data() -> ModuleType:
    """``examples/mnist/data.py`` (not a package), loaded by path."""
    spec = importlib.util.spec_from_file_location("mnist_example_data", MNIST_DATA)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(MNIST_DATA)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # the importlib recipe: lookups by module name work
    spec.loader.exec_module(module)
    return module


@functools.cache
def _mnist_splits() -> Any:
    return _mnist_data().load_splits()


@functools.cache
def _mnist_quantized(scheme: str) -> Any:
    """The demo CNN quantized as ``make demo`` does (default calibration), on all 256
    calibration images (``make demo`` holds some back for its quick check)."""
    try:
        import eightbit
        from eightbit.quant import QuantConfig
    except ImportError as exc:
        raise engine.Unavailable(f"eightbit not importable: {exc}") from exc
    print(f"[codegen] quantizing {MNIST_MODEL.name} ({scheme}) ...", flush=True)
    data = {_mnist_data().INPUT_NAME: _mnist_splits().calib_x}
    config = QuantConfig(scheme=scheme)  # type: ignore[arg-type]
    return eightbit.quantize(str(MNIST_MODEL), data, config, check_samples=0, threads=1)


CASES = (
    Case(
        "MNIST demo CNN",
        "mnist",
        _mnist_quantized,
        lambda: _mnist_splits().test_x[:HOST_SAMPLES],
    ),
    Case(
        "MobileNetV2 224x224",
        "mobilenet_v2",
        lambda scheme: engine.quantized(models.mobilenet_v2(), scheme),
        lambda: np.asarray(images.evaluation_set()[:HOST_SAMPLES]),
    ),
)


# --------------------------------------------------------------------------------------------
# Compiling and measuring
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    """``arm-none-eabi-size`` of one object file (Berkeley format)."""

    text: int
    data: int
    bss: int

    @property
    def flash(self) -> int:
        return self.text + self.data

    @property
    def ram(self) -> int:
        return self.data + self.bss


def _compile(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=COMPILE_TIMEOUT)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:3])} ... failed: {done.stderr.strip()[-600:]}")


def cross_compile(folder: Path, name: str) -> Sizes:
    """The model's object for Cortex-M4 and its section sizes."""
    obj = folder / f"{name}.cortex-m4.o"
    _compile([CROSS_CC, *CROSS_FLAGS, "-c", str(folder / f"{name}.c"), "-o", str(obj)])
    return parse_size(subprocess.run([CROSS_SIZE, str(obj)], capture_output=True, text=True).stdout)


def parse_size(text: str) -> Sizes:
    """The first data row of ``size``'s Berkeley output: text data bss dec hex filename."""
    rows = [line.split() for line in text.strip().splitlines()]
    if len(rows) < 2 or rows[0][:3] != ["text", "data", "bss"]:
        raise ValueError(f"unexpected size output: {text!r}")
    text_bytes, data, bss = (int(v) for v in rows[1][:3])
    return Sizes(text_bytes, data, bss)


def _host_main(name: str) -> str:
    """A driver reading raw input integers from stdin, writing raw output integers."""
    macro = name.upper()
    return f"""#include <stdio.h>
#include "{name}.h"

static {name}_input_t input[{macro}_INPUT_SIZE];
static {name}_output_t output[{macro}_OUTPUT_SIZE];

int main(void)
{{
    while (fread(input, sizeof input, 1, stdin) == 1) {{
        int status = {name}_run(input, output);
        if (status != 0) return 10 + status;
        fwrite(output, sizeof output, 1, stdout);
    }}
    return 0;
}}
"""


def host_bit_exact(generated: Any, folder: Path, reals: np.ndarray) -> str:
    """Compile the C for this machine, run it on ``reals``; "k/n" outputs equal the engine's."""
    from eightbit.codegen import run_integers
    from eightbit.quant import quantize_values

    gcc = shutil.which("gcc")
    if gcc is None:
        return "not checked (no gcc)"
    interface = generated.interface
    if len(interface.inputs) != 1 or len(interface.outputs) != 1:
        return "not checked (several ports)"
    x, y = interface.inputs[0], interface.outputs[0]
    name = generated.name
    (folder / "host_main.c").write_text(_host_main(name))
    binary = folder / "host_app"
    sources = [str(folder / "host_main.c"), str(folder / f"{name}.c")]
    _compile([gcc, *HOST_FLAGS, "-I", str(folder), *sources, "-o", str(binary)])
    stored = np.stack([quantize_values(r.reshape(x.shape), x.params) for r in reals])
    done = subprocess.run(
        [str(binary)], input=stored.tobytes(), capture_output=True, timeout=COMPILE_TIMEOUT
    )
    if done.returncode != 0:
        return f"C failed (exit {done.returncode})"
    got = np.frombuffer(done.stdout, dtype=y.params.numpy_dtype).reshape(len(stored), -1)
    equal = sum(
        np.array_equal(row, run_integers(interface, {x.c_name: s})[y.c_name].reshape(-1))
        for row, s in zip(got, stored, strict=True)
    )
    return f"{equal}/{len(stored)}"


# --------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------


def _bytes(value: int) -> str:
    return f"{value:,}"


def run(cases: tuple[Case, ...] = CASES) -> Table:
    cross = shutil.which(CROSS_CC) and shutil.which(CROSS_SIZE)
    table = Table(
        "Generated C for a Cortex-M4 (arm-none-eabi-gcc -Os, the model's object alone)",
        [
            "model",
            "scheme",
            "layers",
            "int8 weights B",
            "const tables B",
            "flash B",
            "flash / weights",
            "arena B",
            "lower bound B",
            "arena / bound",
            "without in-place B",
            "host gcc bit-exact",
        ],
        notes=[
            f"flash = text + data of `{CROSS_CC} {' '.join(CROSS_FLAGS)} -c NAME.c` "
            f"({CROSS_SIZE}); weights = Conv/Gemm/MatMul weights, one byte each; const "
            "tables = every table the layers read (weights, int32 biases, multipliers, shifts, "
            "lookup tables)",
            "arena = NAME_ARENA_BYTES, the one static buffer of every intermediate tensor "
            "(.bss); lower bound = NAME_ARENA_LOWER_BOUND, the most bytes alive at once "
            "(docs/numerics.md G.5); without in-place = the same bound if no layer could "
            "write over an input it is the last reader of",
            f"host gcc bit-exact: `gcc {' '.join(HOST_FLAGS)}` on {HOST_SAMPLES} real inputs "
            "(MNIST test images, evaluation crops), outputs equal to the integer engine's",
        ],
    )
    if not cross:
        table.notes.append(f"{CROSS_CC}/{CROSS_SIZE} not installed: flash not measured")
    for case in cases:
        for scheme in SCHEMES:
            print(f"[codegen] {case.label} {scheme} ...", flush=True)
            try:
                _add_row(table, case, scheme, bool(cross))
            except (engine.Unavailable, RuntimeError, subprocess.TimeoutExpired) as exc:
                table.add(case.label, scheme, "failed", *[None] * 9)
                table.notes.append(f"{case.label} {scheme}: {exc}")
    return table


def _add_row(table: Table, case: Case, scheme: str, cross: bool) -> None:
    from eightbit.codegen import generate_c

    name = f"{case.name}_{scheme}"
    generated = generate_c(case.quantize(scheme), name, source=f"{case.label} ({scheme})")
    folder = WORK / name
    generated.write(folder)
    sizes = cross_compile(folder, name) if cross else None
    arena = generated.arena
    table.add(
        case.label,
        scheme,
        generated.layers,
        _bytes(generated.weight_bytes),
        _bytes(generated.table_bytes),
        None if sizes is None else _bytes(sizes.flash),
        None if sizes is None else sizes.flash / generated.weight_bytes,
        _bytes(arena.size),
        _bytes(arena.lower_bound),
        arena.size / arena.lower_bound,
        _bytes(generated.tensor_lower_bound),
        host_bit_exact(generated, folder, case.samples()),
    )
