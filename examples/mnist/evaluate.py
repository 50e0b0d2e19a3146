"""Float vs int8 on the held-out MNIST images: accuracy, file size, ONNX Runtime latency.

Usage: python examples/mnist/evaluate.py FLOAT.onnx INT8.onnx DATA_DIR
(DATA_DIR holds test.npz and test_labels.npy from data.py).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from eightbit.analysis.metrics import accuracy, topk_agreement


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    # Exact int8 sums on x86 CPUs without VNNI (README, "Running the int8 model").
    options.add_session_config_entry("session.x64quantprecision", "1")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _latency_ms(session: ort.InferenceSession, image: np.ndarray, runs: int) -> float:
    """Median latency in ms of one ``session.run`` on ``image``, after a warm-up."""
    name = session.get_inputs()[0].name
    for _ in range(20):
        session.run(None, {name: image})
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, {name: image})
        times.append(time.perf_counter() - start)
    return 1000.0 * float(np.median(times))


def main(float_path: Path, int8_path: Path, data_dir: Path) -> None:
    images = np.load(data_dir / "test.npz")["image"]
    labels = np.load(data_dir / "test_labels.npy")
    sessions = {"float": _session(float_path), "int8": _session(int8_path)}
    logits = {k: s.run(None, {"image": images})[0] for k, s in sessions.items()}
    sizes = {"float": float_path.stat().st_size, "int8": int8_path.stat().st_size}
    print(f"{len(labels)} held-out MNIST images, 1 ONNX Runtime thread")
    print(f"{'':6} {'accuracy':>9} {'size (bytes)':>13} {'batch 1 (ms)':>13} {'batch 64 (ms)':>14}")
    for kind, session in sessions.items():
        print(
            f"{kind:6} {accuracy(logits[kind], labels):9.2%} {sizes[kind]:13,} "
            f"{_latency_ms(session, images[:1], 300):13.3f} "
            f"{_latency_ms(session, images[:64], 30):14.3f}"
        )
    saved = 1 - sizes["int8"] / sizes["float"]
    agreement = topk_agreement(logits["float"], logits["int8"], 1)
    print(f"top-1 agreement int8 vs float {agreement:.2%}; {saved:.1%} smaller")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
