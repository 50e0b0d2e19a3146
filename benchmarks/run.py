"""``make bench``: eightbit side by side with ONNX Runtime's quantizer and NNCF, in one run.

    .venv/bin/python benchmarks/run.py                    # all -> benchmarks/RESULTS.md
    .venv/bin/python benchmarks/run.py --only calibration # -> benchmarks/_work/RESULTS.partial.md
    .venv/bin/python benchmarks/run.py --only quantize --tools NNCF
    .venv/bin/python benchmarks/run.py --only zoo --update-results  # zoo's tables in RESULTS.md

Sections:
  quantize     MobileNetV2: top-1/top-5 agreement, SQNR, latency ratio, quantization time
  steps        improvement steps: every preset with the time of each step, vs NNCF
               (MobileNetV2); fast vs default on the MNIST demo and ResNet-18-style
  latency      ResNet-18-style: int8/fp32 latency and file size
  calibration  ResNet-18-style: calibration memory and speed targets, versus ORT's calibrators
  engine       integer engine vs ORT on the same QDQ model: exactness (end to end, per node)
               and 1-thread speed vs ORT fp32 (ResNet-18-style, MobileNetV2)
  kernels      ONNX Runtime's default int8 kernels vs its exact ones on this CPU (x86 without
               VNNI saturates u8 x s8 pairs): accuracy and latency of both sessions
  codegen      generated C for Cortex-M4: flash, weights, arena vs its lower bound (MNIST demo
               CNN, MobileNetV2)
  ray          Ray: validate, calibrate and the fallback on 1-2 local workers vs one process
               (MobileNetV2): speedups, a worker's peak memory, identical results
  zoo          real models of other families (detector, OCR, file type, pitch, transformers):
               each family's metric, SQNR, worst-slice SQNR, latency and size, eightbit's
               default vs ORT, NNCF and AIMET (--zoo-models picks models)
  targets      each --target (ort, tensorrt, openvino, mcu, fpga) on ResNet-18-style and
               MobileNetV2: agreement, SQNR, size, latency in ORT (and OpenVINO for openvino)
  memory       peak RSS and wall time of whole commands (eightbit fast/default, ORT, NNCF)
               on VGG-16 and on generated Gemm stacks up to ~2.5 GB (external data)
  pytorch      the PyTorch front end (quantize(module)) vs the hand-exported ONNX model:
               same integers, agreement, SQNR (MobileNetV2)
  s16          16x8 (int16 activations, int8 weights) on the engine and in the C: MNIST demo
               CNN and MobileNetV2, int8 vs 16x8: agreement with ORT, SQNR, engine time,
               Cortex-M4 flash and arena
  transformers MiniLM-L6 and ViT-S: eightbit's default (the automatic mode), --mode static and
               dynamic, vs ORT quantize_static/quantize_dynamic and NNCF (default and
               TRANSFORMER): metric, SQNR, latency at batch 1 and 16, size
  finetune     MobileNetV2: the default preset vs --preset finetune (fine-tuning by
               distillation) vs NNCF's QAT: agreement, SQNR, latency, time
  promotion    MobileNetV2 --target mcu, plain and --min-sqnr 25 (int16 promotion): agreement,
               SQNR, float nodes, int16 tensors, flash and arena vs the all-int8 model

Models and image crops are built on first use and cached in benchmarks/_work/.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    # Run as a script (`python benchmarks/run.py`): make the `benchmarks` package importable.
    sys.path.insert(0, str(ROOT))

from benchmarks import (  # noqa: E402
    accuracy,
    calibration,
    codegen,
    engine,
    finetune,
    front_end,
    kernels,
    latency,
    memory,
    promotion,
    ray_scale,
    s16,
    steps,
    targets,
    transformers,
)
from benchmarks.report import (  # noqa: E402
    Table,
    hand_written_sections,
    load_average,
    merged_report,
    print_tables,
    to_markdown,
    updated_report,
    write_atomic,
)
from benchmarks.zoo import catalog as zoo_catalog  # noqa: E402
from benchmarks.zoo import fallback as zoo_fallback  # noqa: E402
from benchmarks.zoo import section as zoo  # noqa: E402

SECTIONS = (
    "quantize", "steps", "latency", "calibration", "engine", "kernels", "codegen", "zoo", "ray",
    "targets", "memory", "pytorch", "transformers", "s16", "finetune", "promotion",
)  # fmt: skip
TOOLS = ("eightbit", "ONNX Runtime", "NNCF", "AIMET")
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
PARTIAL = ROOT / "benchmarks" / "_work" / "RESULTS.partial.md"


def _csv(allowed: tuple[str, ...]) -> Callable[[str], set[str]]:
    def parse(text: str) -> set[str]:
        items = {item.strip() for item in text.split(",") if item.strip()}
        unknown = items - set(allowed)
        if unknown:
            raise argparse.ArgumentTypeError(
                f"must be among {list(allowed)} (got {sorted(unknown)})"
            )
        return items

    return parse


def _interpreter() -> str:
    """The Python that ran us, relative to the repo when it is the repo's venv."""
    exe = Path(sys.executable)
    try:
        return str(exe.relative_to(ROOT))
    except ValueError:
        return str(exe)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", type=_csv(SECTIONS), help="comma-separated sections to run")
    parser.add_argument(
        "--tools", type=_csv(TOOLS), help="comma-separated tools (quantize/latency/zoo)"
    )
    parser.add_argument(
        "--zoo-models",
        type=_csv(tuple(m.key for m in zoo_catalog.ZOO)),
        help="comma-separated zoo models (default: all)",
    )
    parser.add_argument(
        "--zoo-reuse",
        action="store_true",
        help="zoo: evaluate the quantized models an earlier run left in _work/zoo, do not "
        "quantize again",
    )
    parser.add_argument(
        "--zoo-fallback",
        action="store_true",
        help="zoo: also time --min-sqnr's fallback on the largest zoo model (can take long)",
    )
    parser.add_argument(
        "--no-ort-calibration",
        action="store_true",
        help="skip ONNX Runtime's calibrators in the calibration section (they need ~6 GB)",
    )
    parser.add_argument(
        "--update-results",
        action="store_true",
        help=f"replace the tables this run makes in {RESULTS.relative_to(ROOT)} (and add new "
        "ones), keeping the rest; the header says which command reran them",
    )
    parser.add_argument(
        "--merge",
        type=Path,
        metavar="PARTIAL.md",
        help=f"run nothing: put the sections of a partial run's report into "
        f"{RESULTS.relative_to(ROOT)} (replacing those of the same title)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        help=f"Markdown report (default: {RESULTS.relative_to(ROOT)} for a full run, "
        f"{PARTIAL.relative_to(ROOT)} otherwise)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.merge is not None:
        output = args.output or RESULTS
        partial = args.merge.read_text(encoding="utf-8")
        write_atomic(output, merged_report(output.read_text(encoding="utf-8"), partial))
        print(f"wrote {output}")
        return 0
    sections = args.only or set(SECTIONS)
    full = (
        sections == set(SECTIONS)
        and not args.tools
        and not args.no_ort_calibration
        and not args.zoo_models
        and not args.zoo_reuse
    )
    output = args.output or (RESULTS if full else PARTIAL)
    started, clock, load_at_start = (
        dt.datetime.now().astimezone(),
        time.perf_counter(),
        load_average(),
    )

    runs: dict[str, Callable[[], list[Table]]] = {
        "quantize": lambda: [accuracy.sanity_table(), accuracy.run(args.tools)],
        "steps": lambda: steps.run(args.tools),
        "latency": lambda: [latency.run(args.tools)],
        "calibration": lambda: calibration.run(with_ort=not args.no_ort_calibration),
        "engine": engine.run,
        "kernels": lambda: [kernels.run()],
        "codegen": lambda: [codegen.run()],
        "zoo": lambda: (
            zoo.run(args.tools, args.zoo_models, args.zoo_reuse)
            + ([zoo_fallback.run()] if args.zoo_fallback else [])
        ),
        "ray": ray_scale.run,
        "targets": targets.run,
        "memory": memory.run,
        "pytorch": lambda: [front_end.run()],
        "transformers": transformers.run,
        "s16": lambda: [s16.run()],
        "finetune": lambda: [finetune.run()],
        "promotion": promotion.run,
    }
    tables: list[Table] = []
    minutes: dict[str, float] = {}
    for name, run in runs.items():
        if name in sections:
            section_clock = time.perf_counter()
            tables += run()
            minutes[name] = (time.perf_counter() - section_clock) / 60

    print_tables(tables)
    command = [_interpreter(), "benchmarks/run.py", *argv]
    output.parent.mkdir(parents=True, exist_ok=True)
    elapsed, load = time.perf_counter() - clock, (load_at_start, load_average())
    if args.update_results and not full:
        output = args.output or RESULTS
        took = ", ".join(f"{name} {value:.1f} min" for name, value in minutes.items())
        rerun = (
            f"rerun alone: `{shlex.join(command)}` on {started.isoformat(timespec='seconds')}"
            f" ({took}; load at start {load[0]})"
        )
        write_atomic(output, updated_report(output.read_text(encoding="utf-8"), tables, rerun))
    else:
        kept = hand_written_sections(output.read_text(encoding="utf-8")) if output.exists() else ""
        write_atomic(output, to_markdown(tables, command, started, elapsed, load, minutes, kept))
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
