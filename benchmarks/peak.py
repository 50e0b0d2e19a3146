"""Run a command and write its own peak RSS and CPU time: ``python -m benchmarks.peak OUT -- CMD``.

Why a launcher: on Linux a child's ``ru_maxrss`` keeps the high-water mark of the memory it
started from across ``exec``, and Python's ``subprocess`` starts children with ``vfork``
where it can, so a child of the bench process reports at least the bench's own peak (a
bench that built VGG-16 in-process made every command read 2.5 GB). Started from this small
process, the command's figure is its own plus at most this launcher's few MB.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def vm_hwm_mb(pid: int | str = "self") -> float | None:
    """A process's own peak resident set (``VmHWM``, MB), which belongs to the memory map
    made at ``exec``; None where ``/proc`` does not tell."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    return None


def main(argv: list[str]) -> int:
    out, separator, *command = argv
    assert separator == "--" and command, "usage: python -m benchmarks.peak OUT -- CMD..."
    process = subprocess.Popen(command)
    _, status, usage = os.wait4(process.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    figures = {
        "peak_kib": usage.ru_maxrss,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "code": code,
    }
    Path(out).write_text(json.dumps(figures), encoding="utf-8")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
