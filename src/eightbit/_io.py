"""Safe output: inputs are never overwritten, and a command's outputs appear all or none.

Writers create a temporary file in the destination's folder and rename it into place, so
an interrupted run never leaves a half-written output. Inside ``all_or_nothing()`` the
renames wait until the whole block has succeeded: a command that writes a model, its plan
and a report either leaves all three or none of them (the temporaries are removed on any
failure, Ctrl-C included). ``check_outputs`` refuses, before any work is done, an output
that would replace an input or could not be written.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import signal
import tempfile
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from eightbit.errors import ConfigError

PathLike = str | os.PathLike[str]


@dataclass
class _Batch:
    """Outputs written so far by an ``all_or_nothing`` block, not yet renamed into place."""

    renames: dict[Path, Path] = field(default_factory=dict)  # destination -> temporary
    created_folders: list[Path] = field(default_factory=list)

    def discard(self) -> None:
        with _sigint_held():  # a second Ctrl-C must not leave temporaries behind
            self._remove_all()

    def _remove_all(self) -> None:
        for temporary in self.renames.values():
            temporary.unlink(missing_ok=True)
        for folder in reversed(self.created_folders):
            with contextlib.suppress(OSError):  # not empty: something else wrote there
                folder.rmdir()

    def commit(self) -> None:
        # Ctrl-C between two renames would leave some outputs new and some old: hold it
        # until every rename is done, then deliver it.
        with _sigint_held():
            done = 0
            try:
                for destination, temporary in self.renames.items():
                    os.replace(temporary, destination)
                    done += 1
            except OSError:
                for temporary in list(self.renames.values())[done:]:
                    temporary.unlink(missing_ok=True)
                raise


_batch: contextvars.ContextVar[_Batch | None] = contextvars.ContextVar("_batch", default=None)


@contextlib.contextmanager
def all_or_nothing() -> Iterator[None]:
    """Hold every ``atomic_path`` output of the block; rename them all when it succeeds."""
    batch = _Batch()
    token = _batch.set(batch)
    try:
        yield
    except BaseException:
        batch.discard()
        raise
    finally:
        _batch.reset(token)
    batch.commit()


@contextlib.contextmanager
def _sigint_held() -> Iterator[None]:
    """Hold Ctrl-C during the block and deliver it after (main thread only).

    Python's handler is swapped, not the thread's signal mask: ONNX Runtime's threads
    would take a signal blocked here, and Python would still raise in this thread.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            if callable(previous):
                previous(signal.SIGINT, None)
            elif previous == signal.SIG_DFL:
                raise KeyboardInterrupt


@contextlib.contextmanager
def atomic_path(destination: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``destination``; rename it into place on success.

    Inside ``all_or_nothing()`` the rename waits for the end of that block.
    """
    dest = Path(destination)
    folder = dest.parent if str(dest.parent) else Path(".")
    if not folder.is_dir():
        raise ConfigError(f"output folder {str(folder)!r} does not exist; create it first")
    if dest.is_dir():
        raise ConfigError(f"output {str(dest)!r} is a folder; give a file name")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=folder)
    os.close(fd)
    tmp = Path(tmp_name)
    batch = _batch.get()
    try:
        # mkstemp creates the file 0600; give the output the permissions a plain open() would.
        os.chmod(tmp, 0o666 & ~_current_umask())
        yield tmp
        if batch is None:
            os.replace(tmp, dest)
        else:
            earlier = batch.renames.pop(dest, None)  # written twice: the last one counts
            if earlier is not None:
                earlier.unlink(missing_ok=True)
            batch.renames[dest] = tmp
    finally:
        if batch is None or batch.renames.get(dest) != tmp:
            tmp.unlink(missing_ok=True)


def pending_path(destination: PathLike) -> Path:
    """Where ``destination``'s content is now: its temporary inside ``all_or_nothing``."""
    batch = _batch.get()
    dest = Path(destination)
    if batch is not None and dest in batch.renames:
        return batch.renames[dest]
    return dest


def output_folder(folder: PathLike) -> Path:
    """Create ``folder`` (and missing parents); inside ``all_or_nothing`` undone on failure."""
    target = Path(folder)
    missing = [target, *target.parents]
    missing = [path for path in missing if not path.exists()]
    target.mkdir(parents=True, exist_ok=True)
    batch = _batch.get()
    if batch is not None:
        batch.created_folders.extend(reversed(missing))
    return target


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(destination: PathLike, data: bytes) -> None:
    with atomic_path(destination) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(destination: PathLike, text: str) -> None:
    atomic_write_bytes(destination, text.encode("utf-8"))


def refuse_overwrite(output: PathLike, *inputs: PathLike) -> None:
    """Raise when ``output`` names the same file as one of ``inputs``."""
    check_outputs(inputs, files=[output])


def check_outputs(
    inputs: Iterable[PathLike | None],
    files: Iterable[PathLike | None] = (),
    folders: Iterable[PathLike | None] = (),
    *,
    inputs_inside_folders: bool = True,
) -> None:
    """Refuse, before any work, outputs that would replace an input or cannot be written.

    ``inputs``: every file or folder the command reads; ``files``: every file it writes;
    ``folders``: folders it writes into, created when missing. An input inside such a
    folder is refused too (its files' names are not known in advance) unless
    ``inputs_inside_folders`` is False (the caller lists every file in ``files``). Paths
    are compared after resolving links and ``..``; None entries are ignored.
    """
    sources = {_real(path): os.fspath(path) for path in inputs if path is not None}
    seen: dict[str, str] = {}
    created: list[str] = []
    for path in (p for p in folders if p is not None):
        real = _real(path)
        _refuse_input(path, real, sources)
        _refuse_twice(path, real, seen)
        if os.path.exists(real) and not os.path.isdir(real):
            raise ConfigError(f"output folder {os.fspath(path)!r} is a file; give a folder")
        if inputs_inside_folders:
            _refuse_inputs_inside(path, real, sources)
        existing = real
        while not os.path.exists(existing):
            existing = os.path.dirname(existing)
        _check_writable_folder(existing, path, existing)
        created.append(real)
    for path in (p for p in files if p is not None):
        real = _real(path)
        _refuse_input(path, real, sources)
        _refuse_twice(path, real, seen)
        if os.path.isdir(real):
            raise ConfigError(f"output {os.fspath(path)!r} is a folder; give a file name")
        parent = os.path.dirname(real)
        if not any(parent == folder or _is_inside(parent, folder) for folder in created):
            _check_writable_folder(parent, path, os.path.dirname(os.fspath(path)) or ".")


def _is_inside(path: str, folder: str) -> bool:
    return path.startswith(folder.rstrip(os.sep) + os.sep)


def _refuse_inputs_inside(path: PathLike, real: str, sources: dict[str, str]) -> None:
    for source_real, source in sources.items():
        if _is_inside(source_real, real):
            raise ConfigError(
                f"output folder {os.fspath(path)!r} holds the input {source!r}; "
                "choose a folder without inputs in it"
            )


def _real(path: PathLike) -> str:
    return os.path.realpath(os.fspath(path))


def _refuse_input(path: PathLike, real: str, sources: dict[str, str]) -> None:
    if real in sources:
        raise ConfigError(
            f"output {os.fspath(path)!r} is the input file {sources[real]!r}; choose another "
            "path (inputs are never overwritten)"
        )


def _refuse_twice(path: PathLike, real: str, seen: dict[str, str]) -> None:
    if real in seen:
        raise ConfigError(
            f"output {os.fspath(path)!r} is also the output {seen[real]!r}; give each its own path"
        )
    seen[real] = os.fspath(path)


def _check_writable_folder(folder: str, output: PathLike, shown: str) -> None:
    """``shown``: the folder as the user wrote it."""
    if not os.path.isdir(folder):
        what = "is not a folder" if os.path.exists(folder) else "does not exist; create it first"
        raise ConfigError(f"cannot write {os.fspath(output)!r}: {shown!r} {what}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write {os.fspath(output)!r}: folder {shown!r} is not writable")
