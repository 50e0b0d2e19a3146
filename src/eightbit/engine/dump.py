"""Writing every integer tensor of a run, with its format, for comparison with a device.

The folder receives one ``.npy`` file of stored integers per tensor and ``formats.json``:

    {"format": "eightbit-dump", "version": 1,
     "tensors": {"<model tensor name>": {"file": "<file>.npy", "shape": [...], "dtype": "uint8",
                 "scale": ..., "zero_point": ..., "axis": null, "word_length": 8,
                 "signed": false, "fraction_length": null | f}, ...}}

``fraction_length`` is set in power-of-two mode, where the stored integers are fixed-point
numbers (MATLAB ``fi`` with word length 8 and that fraction length).
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from eightbit._io import atomic_write_bytes, atomic_write_text
from eightbit.engine.program import Program
from eightbit.errors import ConfigError

DUMP_FORMAT = "eightbit-dump"
DUMP_VERSION = 1
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def file_stem(tensor: str, taken: set[str]) -> str:
    """A file name for ``tensor``: its name with unsafe characters as '_', made unique."""
    stem = _UNSAFE.sub("_", tensor).strip("._") or "tensor"
    candidate, suffix = stem, 1
    while candidate.lower() in taken:
        suffix += 1
        candidate = f"{stem}_{suffix}"
    taken.add(candidate.lower())
    return candidate


def write_dump(
    folder: str | os.PathLike[str], program: Program, integers: Mapping[str, np.ndarray]
) -> Path:
    """Write ``integers`` (integer tensor name -> stored values) and their formats."""
    target = Path(folder)
    if target.exists() and not target.is_dir():
        raise ConfigError(f"dump folder {str(target)!r} is a file; choose a folder")
    target.mkdir(parents=True, exist_ok=True)
    taken: set[str] = set()
    entries: dict[str, Any] = {}
    for name in program.integer_tensors():
        if name not in integers:
            continue
        tensor_format = program.formats[name]
        values = np.asarray(integers[name])
        stem = file_stem(tensor_format.tensor, taken)
        buffer = io.BytesIO()
        np.save(buffer, values, allow_pickle=False)
        atomic_write_bytes(target / f"{stem}.npy", buffer.getvalue())
        entry = tensor_format.to_dict()
        entries[tensor_format.tensor] = {
            "file": f"{stem}.npy",
            "shape": list(values.shape),
            **entry,
        }
    document = {"format": DUMP_FORMAT, "version": DUMP_VERSION, "tensors": entries}
    atomic_write_text(target / "formats.json", json.dumps(document, indent=1) + "\n")
    return target
