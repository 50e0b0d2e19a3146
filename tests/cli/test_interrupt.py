"""Ctrl-C at several moments: exit 130, one ``error:`` line, outputs all or none (issue 14, d5).

The CLI runs in a subprocess. Most cases make the process send SIGINT to itself at a
chosen moment (a tiny hook installed before the command starts), so the moment is exact
whatever the machine's load; one case sends it from outside after a delay.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import eightbit
from tests.cli.conftest import Workspace

SOURCE = str(Path(eightbit.__file__).resolve().parents[1])
TIMEOUT = 120

# Run before the command: ``interrupt()`` sends SIGINT to this process; the hooks call it.
HOOKS = {
    # While Python imports click, before the command exists.
    "startup": """
import importlib.abc, sys
class Hook(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "click":
            interrupt()
        return None
sys.meta_path.insert(0, Hook())
""",
    # While the subcommand's heavy imports load (ONNX Runtime).
    "imports": """
import importlib.abc, sys
class Hook(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "onnxruntime":
            sys.meta_path.remove(self)
            interrupt()
        return None
sys.meta_path.insert(0, Hook())
""",
    # While a C extension initializes: ONNX Runtime's native module turns the
    # KeyboardInterrupt into "ImportError: initialization failed" (seen 1 run in 40).
    "native_import": """
import importlib.abc, sys
class Hook(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.endswith("onnxruntime_pybind11_state"):
            sys.meta_path.remove(self)
            try:
                interrupt()
            except KeyboardInterrupt:
                raise ImportError("initialization failed") from None
        return None
sys.meta_path.insert(0, Hook())
""",
    # In the middle of calibration (the second run of the model).
    "calibration": """
import onnxruntime
original = onnxruntime.InferenceSession.run
calls = []
def run(self, *args, **kwargs):
    calls.append(1)
    if len(calls) == 2:
        interrupt()
    return original(self, *args, **kwargs)
onnxruntime.InferenceSession.run = run
""",
    # After the first output's temporary file is written, before the others.
    "writing": """
import pathlib
original = pathlib.Path.write_bytes
def write_bytes(self, data):
    written = original(self, data)
    interrupt()
    return written
pathlib.Path.write_bytes = write_bytes
""",
    # While the outputs are renamed into place (held until every rename is done).
    "renaming": """
import os
original = os.replace
def replace(source, destination):
    interrupt()
    return original(source, destination)
os.replace = replace
""",
}

PRELUDE = """
import os, signal, sys
def interrupt():
    os.kill(os.getpid(), signal.SIGINT)
"""
MAIN = """
sys.argv[0] = "eightbit"
from eightbit.cli import main
main()
"""


def _environment() -> dict[str, str]:
    root = str(Path(SOURCE).parent)  # the repository, for tests.* imports in nothing here
    paths = [SOURCE, root, os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}


def _quantize_args(ws: Workspace, out: Path, data: str = "test.npz") -> list[str]:
    return [
        "quantize", str(ws / "mnist_cnn.onnx"), "-d", str(ws / data), "-o", str(out / "q3.onnx"),
        "--preset", "fast", "--report", str(out / "r.html"), "--json",
    ]  # fmt: skip


def _check(
    result: subprocess.CompletedProcess[str], out: Path, ws: Workspace, before: dict[str, str]
) -> None:
    # Not killed by SIGINT either (-2): CPython does that at exit after a KeyboardInterrupt
    # left code run through PyRun_* (inside ONNX Runtime), unless the CLI clears the flag.
    assert result.returncode == 130, (result.returncode, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: interrupted"), result.stderr
    written = sorted(path.name for path in out.iterdir())
    assert written in ([], ["q3.onnx", "q3.plan.json", "r.html"]), written  # all or none
    assert ws.digests() == before


@pytest.mark.parametrize("moment", list(HOOKS))
def test_ctrl_c_at_a_moment(moment: str, workspace: Workspace, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    before = workspace.digests()
    script = PRELUDE + HOOKS[moment] + MAIN
    result = subprocess.run(
        [sys.executable, "-c", script, *_quantize_args(workspace, out)],
        capture_output=True,
        text=True,
        env=_environment(),
        timeout=TIMEOUT,
    )
    _check(result, out, workspace, before)
    if moment in ("startup", "imports", "native_import", "calibration", "writing"):
        assert sorted(out.iterdir()) == []
    if moment == "renaming":  # the renames were under way: they all finish
        assert (out / "q3.onnx").exists() and (out / "r.html").exists()


@pytest.mark.parametrize("delay", [1.0, 3.0])
def test_ctrl_c_from_outside(delay: float, workspace: Workspace, tmp_path: Path) -> None:
    """A real Ctrl-C after a delay, on 2,000 samples (wherever the command then is)."""
    many = workspace / "many.npy"
    if not many.exists():
        images = np.random.default_rng(5).random((2000, 1, 28, 28), dtype=np.float32)
        np.save(many, images)
    out = tmp_path / "out"
    out.mkdir()
    before = workspace.digests()
    command = [sys.executable, "-m", "eightbit", *_quantize_args(workspace, out, "many.npy")]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_environment()
    )
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=TIMEOUT)
    result = subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
    if result.returncode == 0:
        pytest.skip(f"the command finished within {delay} s, before Ctrl-C")
    _check(result, out, workspace, before)
