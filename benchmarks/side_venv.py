"""Venvs of their own for the tools that pin their own stacks (AIMET's), under _work.

A tool's venv is created on first use: its requirements installed with pip (the CPU torch
this machine has in place of the CUDA one they would resolve to), then the tool itself
without its declared dependencies; ready when the tool's module imports.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path


def ensure(
    venv: Path,
    requirement: str,
    dependencies: Sequence[str],
    without_dependencies: Sequence[str],
    imported: str,
    after_install: Callable[[], None] | None = None,
) -> str | None:
    """Create ``venv`` when ``imported`` does not import there; None when ready, else why not.

    ``after_install``: a last step before the import is tried (e.g. writing a stub)."""
    python = venv / "bin" / "python"
    if python.exists() and importable(python, imported):
        return None
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
        pip = [str(python), "-m", "pip", "install", "-q"]
        for command in ([*pip, *dependencies], [*pip, "--no-deps", *without_dependencies]):
            subprocess.run(command, check=True, timeout=1800, capture_output=True)
        if after_install is not None:
            after_install()
    except (OSError, subprocess.SubprocessError) as exc:
        return f"could not install {requirement} into {venv}: {exc}"
    if importable(python, imported):
        return None
    return f"{requirement} installed but {imported} does not import"


def importable(python: Path, module: str) -> bool:
    """Whether ``module`` imports under the interpreter ``python``."""
    done = subprocess.run([str(python), "-c", f"import {module}"], capture_output=True, timeout=300)
    return done.returncode == 0
