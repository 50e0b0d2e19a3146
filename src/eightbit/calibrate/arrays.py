"""Streaming readers of ``.npy`` files and ``.npz`` members, a few rows at a time.

``np.load`` would hold a whole data set in memory (a memory map too, once its pages have
been read); calibration must not grow with the number of samples, so rows along the first
axis are read from the file as they are needed.
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Protocol

import numpy as np

from eightbit.errors import DataError


class _Closeable(Protocol):
    def close(self) -> None: ...


class ArrayStream:
    """One stored array, read ``count`` rows (samples) at a time from the start.

    ``owner`` (e.g. the zip archive the stream is a member of) is closed with the stream.
    """

    def __init__(self, stream: IO[bytes], label: str, *, owner: _Closeable | None = None) -> None:
        self.label = label
        self._stream = stream
        self._owner = owner
        try:
            version = np.lib.format.read_magic(stream)
            if version == (1, 0):
                header = np.lib.format.read_array_header_1_0(stream)
            else:  # 2.0 and 3.0 differ only in the header's encoding of non-ASCII names
                header = np.lib.format.read_array_header_2_0(stream)
        except ValueError as error:
            raise DataError(f"{label} is not a valid .npy array: {error}") from None
        shape, fortran_order, dtype = header
        if dtype.hasobject:
            raise DataError(
                f"{label} holds Python objects (saved with pickle); save numeric arrays instead"
            )
        if len(shape) == 0:
            raise DataError(
                f"{label} is a scalar; data needs a first axis of samples (for a model input "
                "that takes one fixed scalar, such as a sample rate, make that input a "
                "constant of the model)"
            )
        self.shape: tuple[int, ...] = tuple(shape)
        self.dtype: np.dtype = dtype
        self.rows = shape[0]
        self._row_bytes = math.prod(shape[1:]) * dtype.itemsize
        self._fortran = fortran_order
        self._whole: np.ndarray | None = None
        self._next_row = 0

    def skip(self, count: int) -> None:
        """Pass over the next ``count`` rows without reading them (a shard's start)."""
        count = min(count, self.rows - self._next_row)
        if not self._fortran:  # Fortran order reads the whole array on the first read
            self._stream.seek(count * self._row_bytes, 1)
        self._next_row += count

    def read(self, count: int) -> np.ndarray:
        """The next ``count`` rows (fewer at the end of the array)."""
        count = min(count, self.rows - self._next_row)
        start = self._next_row
        self._next_row += count
        if self._fortran:
            # Rows of a Fortran-ordered array are not contiguous in the file: read it once.
            if self._whole is None:
                self._whole = self._read_rows(self.rows, order="F")
            return self._whole[start : start + count]
        return self._read_rows(count, order="C")

    def _read_rows(self, count: int, order: str) -> np.ndarray:
        size = (
            count * self._row_bytes if order == "C" else math.prod(self.shape) * self.dtype.itemsize
        )
        data = self._stream.read(size)
        if len(data) != size:
            raise DataError(
                f"{self.label} is truncated: expected {size} more bytes, got {len(data)}"
            )
        shape = (count, *self.shape[1:]) if order == "C" else self.shape
        return np.frombuffer(data, dtype=self.dtype).reshape(shape, order=order)  # type: ignore[call-overload]

    def close(self) -> None:
        self._stream.close()
        if self._owner is not None:
            self._owner.close()


def open_npy(path: Path) -> ArrayStream:
    try:
        stream = path.open("rb")
    except OSError as error:
        raise DataError(f"cannot open data file {str(path)!r}: {error.strerror}") from None
    try:
        return ArrayStream(stream, f"data file {str(path)!r}")
    except BaseException:
        stream.close()
        raise


def npz_keys(path: Path) -> list[str]:
    """Names of the arrays in an ``.npz`` archive, in stored order."""
    try:
        with zipfile.ZipFile(path) as archive:
            return [name[: -len(".npy")] for name in archive.namelist() if name.endswith(".npy")]
    except (OSError, zipfile.BadZipFile) as error:
        raise DataError(f"cannot read {str(path)!r} as an .npz archive: {error}") from None


def open_npz_member(path: Path, key: str) -> ArrayStream:
    """A stream over one array of an ``.npz`` archive (compressed or not)."""
    archive = zipfile.ZipFile(path)
    try:
        stream = archive.open(f"{key}.npy")
        return ArrayStream(stream, f"array {key!r} of {str(path)!r}", owner=archive)
    except KeyError:
        archive.close()
        raise DataError(f"{str(path)!r} has no array {key!r}") from None
    except BaseException:
        archive.close()
        raise


def iterate_rows(streams: dict[str, ArrayStream], count: int) -> Iterator[dict[str, np.ndarray]]:
    """Read ``count`` rows of every stream in lockstep until the shortest ends; then close all."""
    try:
        while True:
            chunk = {name: stream.read(count) for name, stream in streams.items()}
            if not chunk or min(len(rows) for rows in chunk.values()) == 0:
                return
            yield chunk
    finally:
        for stream in streams.values():
            stream.close()
