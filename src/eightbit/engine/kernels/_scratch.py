"""Reusable work buffers for the fast kernels (one set per thread).

A fresh multi-megabyte numpy array costs a page fault per 4 KiB page the first time it is
written, which on the engine's layer sizes takes as long as the arithmetic itself. The fast
kernels therefore write their intermediates (im2col matrices, float accumulators, int64
requantization products) into buffers kept here and reused from one call to the next. A
buffer is only ever a temporary inside one kernel call: no step returns one, so results
never alias. Buffers are per thread (``threading.local``), so programs may run
concurrently; buffers above ``LARGEST`` bytes are not kept.
"""

from __future__ import annotations

import threading

import numpy as np
import numpy.typing as npt

LARGEST = 256 * 2**20  # bytes; larger requests get a fresh array each time

_local = threading.local()


def scratch(key: str, shape: tuple[int, ...], dtype: npt.DTypeLike) -> np.ndarray:
    """An uninitialised C-contiguous array of ``shape`` and ``dtype``, reused per ``key``.

    Two arrays live at the same time must use different keys; the contents of a key's
    array are undefined after the next request for that key.
    """
    kind = np.dtype(dtype)
    size = int(np.prod(shape, dtype=np.int64)) * kind.itemsize
    if size > LARGEST:
        return np.empty(shape, dtype=kind)
    pool: dict[str, np.ndarray] | None = getattr(_local, "buffers", None)
    if pool is None:
        pool = _local.buffers = {}
    buffer = pool.get(key)
    if buffer is None or buffer.size < size:
        buffer = pool[key] = np.empty(max(size, 64), dtype=np.uint8)
    return buffer[:size].view(kind).reshape(shape)
