"""The Cortex-M check of a generated model: embed inputs, then compare the board's outputs.

    python mcu/check.py prepare MODEL.onnx DATA.npz OUT_DIR --name NAME [--samples N]
    python mcu/check.py compare OUT_DIR QEMU_LOG

``prepare`` quantizes the first N samples of DATA exactly as the model's boundary does
(the engine's QuantizeLinear), writes them as const arrays (``OUT_DIR/inputs.c``) with
``harness.h`` naming the model's API for ``mcu/main.c``, and stores the engine's integer
outputs for them (``OUT_DIR/expected.npz``). ``compare`` reads the lines the board printed
through semihosting and requires every output to equal the engine's, bit for bit; it
prints ``bit-exact: K/N outputs`` and exits 1 on any difference or missing sample.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np

from eightbit.codegen import analyze, run_integers
from eightbit.codegen.c import c_type
from eightbit.engine import prepare
from eightbit.quant import quantize_values

_LINE = re.compile(r"^sample (\d+) status (-?\d+):((?: -?\d+)*)\s*$")


def _prepare(model: str, data: str, out: Path, name: str, samples: int) -> None:
    interface = analyze(prepare(model))
    if len(interface.inputs) != 1 or len(interface.outputs) != 1:
        raise SystemExit("the harness runs models with one input and one output")
    x, y = interface.inputs[0], interface.outputs[0]
    with np.load(data) as arrays:
        reals = np.asarray(arrays[x.model_name][:samples], dtype=np.float32)
    stored = np.stack([quantize_values(r.reshape(x.shape), x.params) for r in reals])
    expected = np.stack([run_integers(interface, {x.c_name: s})[y.c_name] for s in stored])
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "expected.npz", outputs=expected.reshape(len(stored), -1))
    rows = []
    for values in stored.reshape(len(stored), -1):
        rows.append("    {" + ", ".join(str(int(v)) for v in values) + "}")
    macro = name.upper()
    (out / "harness.h").write_text(
        "\n".join(
            [
                "/* Written by mcu/check.py: the model under test and its inputs. */",
                f'#include "{name}.h"',
                f"#define HARNESS_RUN {name}_run",
                f"#define HARNESS_INPUT_T {c_type(x.dtype)}",
                f"#define HARNESS_OUTPUT_T {c_type(y.dtype)}",
                f"#define HARNESS_INPUT_SIZE {macro}_INPUT_SIZE",
                f"#define HARNESS_OUTPUT_SIZE {macro}_OUTPUT_SIZE",
                f"#define HARNESS_SAMPLES {len(stored)}",
                "extern const HARNESS_INPUT_T harness_inputs[HARNESS_SAMPLES][HARNESS_INPUT_SIZE];",
                "",
            ]
        )
    )
    (out / "inputs.c").write_text(
        '#include "harness.h"\n\n'
        "/* The stored integers of each input, quantized as the model's boundary does. */\n"
        "const HARNESS_INPUT_T harness_inputs[HARNESS_SAMPLES][HARNESS_INPUT_SIZE] = {\n"
        + ",\n".join(rows)
        + "\n};\n"
    )
    print(f"prepared {len(stored)} input(s) of {model} for {name}")


def _compare(out: Path, log: Path) -> int:
    with np.load(out / "expected.npz") as arrays:
        expected = arrays["outputs"]
    printed: dict[int, tuple[int, list[int]]] = {}
    for line in log.read_text(errors="replace").splitlines():
        found = _LINE.match(line.strip())
        if found:
            values = [int(v) for v in found.group(3).split()]
            printed[int(found.group(1))] = (int(found.group(2)), values)
    exact = 0
    for index, row in enumerate(expected):
        status, values = printed.get(index, (None, []))
        if status == 0 and values == [int(v) for v in row]:
            exact += 1
        elif status is None:
            print(f"sample {index}: no output from the board", file=sys.stderr)
        else:
            print(
                f"sample {index}: status {status}, board {values}, engine {row.tolist()}",
                file=sys.stderr,
            )
    print(f"bit-exact: {exact}/{len(expected)} outputs")
    return 0 if exact == len(expected) and len(expected) > 0 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    making = commands.add_parser("prepare", help="embed inputs and the engine's outputs")
    making.add_argument("model")
    making.add_argument("data")
    making.add_argument("out", type=Path)
    making.add_argument("--name", required=True)
    making.add_argument("--samples", type=int, default=10)
    comparing = commands.add_parser("compare", help="compare the board's outputs")
    comparing.add_argument("out", type=Path)
    comparing.add_argument("log", type=Path)
    args = parser.parse_args(argv)
    if args.command == "prepare":
        _prepare(args.model, args.data, args.out, args.name, args.samples)
        return 0
    return _compare(args.out, args.log)


if __name__ == "__main__":
    sys.exit(main())
