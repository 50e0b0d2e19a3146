"""A measured command's peak is its own, not the bench process's (benchmarks.peak, worker)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from benchmarks import memory


def test_a_command_s_peak_does_not_carry_the_bench_s_high_water_mark() -> None:
    held = np.ones(400 * 2**20 // 8)  # this process's high-water mark rises by 400 MB ...
    del held  # ... and stays there after the memory is freed
    small = memory.measure([sys.executable, "-c", "pass"])
    assert small.error == "" and small.peak_mb < 200, small


def test_a_command_s_own_allocation_counts() -> None:
    code = "import numpy as np; a = np.ones(300 * 2**20 // 8); a += 1"
    measured = memory.measure([sys.executable, "-c", code])
    assert measured.error == "" and measured.peak_mb > 300, measured


def test_a_worker_s_peak_is_its_own() -> None:
    held = np.ones(400 * 2**20 // 8)
    del held
    code = "from benchmarks import worker; print(worker._peak_rss_mb())"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and float(result.stdout) < 200, result
