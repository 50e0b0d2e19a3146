"""Feeding samples to calibrators without holding them all in memory.

``NpyBatches`` reads batches from an .npy file with ordinary file reads into fresh arrays.
Memory-mapping would be simpler, but every page of a mapped file that has been touched stays
in the process's resident set (and in its peak RSS) until the kernel needs it back, which would
charge the reader's 300 MB to whichever calibrator is being measured. With plain reads the data
costs one batch at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np


class NpyBatches:
    """Re-iterable batches of the first ``count`` rows of an .npy file (C order)."""

    def __init__(self, path: str | Path, count: int | None = None, batch_size: int = 16) -> None:
        self.path = Path(path)
        header = np.load(self.path, mmap_mode="r")  # reads the header only
        self.shape: tuple[int, ...] = tuple(header.shape)
        self.dtype = header.dtype
        self.offset = int(header.offset)
        del header
        available = self.shape[0]
        self.count = available if count is None else count
        if not 0 < self.count <= available:
            raise ValueError(f"{self.path}: asked for {count} samples, file holds {available}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 (got {batch_size})")
        self.batch_size = batch_size
        self.row_items = int(np.prod(self.shape[1:]))

    def __len__(self) -> int:
        return -(-self.count // self.batch_size)

    def __iter__(self) -> Iterator[np.ndarray]:
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            for start in range(0, self.count, self.batch_size):
                rows = min(self.batch_size, self.count - start)
                batch = np.fromfile(f, dtype=self.dtype, count=rows * self.row_items)
                if batch.size != rows * self.row_items:
                    raise ValueError(f"{self.path}: truncated at row {start}")
                yield batch.reshape((rows, *self.shape[1:]))


def ort_reader(batches: NpyBatches, input_name: str) -> object:
    """An ONNX Runtime ``CalibrationDataReader`` over ``batches`` (one pass, rewindable)."""
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it: Iterator[np.ndarray] = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._it, None)
            return None if batch is None else {input_name: batch}

        def rewind(self) -> None:
            self._it = iter(batches)

        def __len__(self) -> int:
            return len(batches)

    return _Reader()
