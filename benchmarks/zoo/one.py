"""One zoo model through ``eightbit.quantize`` with chosen improvement steps, judged as the
zoo judges it: a quick way to measure a change on one family without the whole section.

    PYTHONPATH=src:. python -m benchmarks.zoo.one crepe
    PYTHONPATH=src:. python -m benchmarks.zoo.one mobilenet --improve reconstruct=true

Prints the steps' times and the zoo's metric, output SQNR and worst slice on the model's
evaluation samples (ONNX Runtime, 2 threads).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

import eightbit
from benchmarks import metrics
from benchmarks.zoo import catalog, measures
from benchmarks.zoo.spec import data_paths
from eightbit.improve.presets import preset

THREADS = 2


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", choices=[model.key for model in catalog.ZOO])
    parser.add_argument("--preset", default="default")
    parser.add_argument(
        "--improve",
        nargs="*",
        default=[],
        metavar="FIELD=JSON",
        help="ImproveConfig fields, e.g. reconstruct=true",
    )
    parser.add_argument("--output", type=Path, help="where to keep the int8 model")
    args = parser.parse_args(argv)
    model = next(m for m in catalog.ZOO if m.key == args.model)
    changes = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.improve)}
    improve = preset(args.preset, **changes)
    float_path = model.build()
    calibration, evaluation = data_paths(model.key)
    with tempfile.TemporaryDirectory() as folder:
        output = args.output or Path(folder) / "int8.onnx"
        started = time.perf_counter()
        result = eightbit.quantize(
            str(float_path), str(calibration), threads=THREADS, improve=improve
        )
        seconds = time.perf_counter() - started
        result.save(output)
        steps = ", ".join(f"{step.name} {step.seconds:.1f}" for step in result.plan.steps)
        print(f"quantize {seconds:.1f} s ({steps})")
        samples = np.load(evaluation)
        reference = metrics.run_batches(float_path, samples, threads=THREADS)
        candidate = metrics.run_batches(output, samples, threads=THREADS)
    worst = measures.worst_slice_sqnr_db(
        reference, candidate, model.slice_axis, model.predicted_slices
    )
    print(
        f"{model.key}: {model.metric_name} {model.metric(reference, candidate):.4f}, "
        f"SQNR {measures.sqnr_db(reference, candidate):.2f} dB, worst slice {worst:.2f} dB"
    )


if __name__ == "__main__":
    main()
