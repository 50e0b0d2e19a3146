"""Atomic output: a file is either written completely or not at all.

Writers create a temporary file in the destination's folder and rename it into place, so
an interrupted run never leaves a half-written output, and an input is never overwritten
by accident (callers refuse an output path equal to an input path).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from eightbit.errors import ConfigError


@contextlib.contextmanager
def atomic_path(destination: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``destination``; rename it into place on success."""
    dest = Path(destination)
    folder = dest.parent if str(dest.parent) else Path(".")
    if not folder.is_dir():
        raise ConfigError(f"output folder {str(folder)!r} does not exist; create it first")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=folder)
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp creates the file 0600; give the output the permissions a plain open() would.
    os.chmod(tmp, 0o666 & ~_current_umask())
    try:
        yield tmp
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(destination: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(destination) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(destination: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(destination, text.encode("utf-8"))


def refuse_overwrite(output: str | os.PathLike[str], *inputs: str | os.PathLike[str]) -> None:
    """Raise when ``output`` names the same file as one of ``inputs``."""
    out = Path(output).resolve()
    for source in inputs:
        if Path(source).resolve() == out:
            raise ConfigError(
                f"output {str(output)!r} is the input file; choose another path with -o"
            )
