"""eightbit_runtime.h on its own: ``eb_rescale`` and ``eb_requantize`` against the Python
definition (``eightbit.fixed.requantize_int``) on many (acc, M, t), compiled with the
sanitizers, so that every bit of the integer float32 emulation is checked in C too."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from eightbit.codegen.writer import runtime_header
from eightbit.engine.kernels.requantize import requantize_wide_reference
from eightbit.fixed import requantize_int
from tests.codegen.helpers import CFLAGS, require_gcc

_HARNESS = r"""
#include <inttypes.h>
#include <stdio.h>
#include "eightbit_runtime.h"

int main(void)
{
    long long acc, m, t;
    while (scanf("%lld %lld %lld", &acc, &m, &t) == 3) {
        printf("%" PRId64 " %" PRId32 "\n", eb_rescale((int64_t)acc, (int32_t)m, (int32_t)t),
               eb_requantize((int64_t)acc, (int32_t)m, (int32_t)t, 3, -128, 127));
    }
    return 0;
}
"""


def _cases(seed: int) -> list[tuple[int, int, int]]:
    """(acc, M, t): the int32 ends, |acc| around 2^24 (float32(acc) rounds), exact ties of
    M = 2^23, random significands and every t from -7 to 63."""
    rng = np.random.default_rng(seed)
    accumulators = [-(2**31), 2**31 - 1, -(2**24) - 1, 2**24 + 1, 2**24 + 3, -1, 0, 1, 5, -5]
    accumulators += rng.integers(-(2**31), 2**31, 300).tolist()
    accumulators += rng.integers(-(2**26), 2**26, 300).tolist()
    cases = []
    for t in range(-7, 64):
        for m in (2**23, 2**24 - 1, 0, *rng.integers(2**23, 2**24, 3).tolist()):
            picks = rng.choice(len(accumulators), 12, replace=False)
            cases += [(int(accumulators[i]), int(m), t) for i in picks]
        if t - 24 <= 28:  # M = 2^23: odd multiples of 2^(t-24) are exact ties (int32 acc)
            cases += [((2 * k + 1) << max(t - 24, 0), 2**23, t) for k in range(-3, 3)]
    return cases


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Path:
    gcc = require_gcc()
    folder = tmp_path_factory.mktemp("runtime")
    (folder / "eightbit_runtime.h").write_text(runtime_header())
    (folder / "main.c").write_text(_HARNESS)
    binary = folder / "runtime_check"
    subprocess.run(
        [gcc, *CFLAGS, "-I", str(folder), str(folder / "main.c"), "-o", str(binary)], check=True
    )
    return binary


@pytest.mark.parametrize("seed", [0, 1])
def test_eb_rescale_is_the_definition(harness: Path, seed: int) -> None:
    cases = _cases(seed)
    feed = "\n".join(f"{a} {m} {t}" for a, m, t in cases) + "\n"
    done = subprocess.run([str(harness)], input=feed, capture_output=True, text=True, check=True)
    lines = done.stdout.split("\n")
    for (acc, m, t), line in zip(cases, lines, strict=False):
        rescaled, stored = (int(v) for v in line.split())
        want = requantize_int(acc, m, 24 - t)
        assert rescaled == want, (acc, m, t)
        assert stored == min(max(want + 3, -128), 127), (acc, m, t)
    assert len(lines) == len(cases) + 1


_WIDE_HARNESS = r"""
#include <inttypes.h>
#include <stdio.h>
#include "eightbit_runtime.h"

int main(void)
{
    long long acc, m, t;
    while (scanf("%lld %lld %lld", &acc, &m, &t) == 3) {
        printf("%" PRId64 " %" PRId32 "\n",
               eb_rescale_wide((int64_t)acc, (int32_t)m, (int32_t)t),
               eb_requantize_wide((int64_t)acc, (int32_t)m, (int32_t)t, 0, -32768, 32767));
    }
    return 0;
}
"""


def _wide_cases(seed: int) -> list[tuple[int, int, int]]:
    """(acc, M, t) for 16x8 sums: the ±(2^39 − 1) ends, |acc| around 2^24 and 2^31, random
    int64 accumulators below 2^39, exact ties, every t from −7 to 63."""
    rng = np.random.default_rng(seed)
    accumulators = [2**39 - 1, -(2**39) + 1, 2**31, -(2**31) - 1, 2**24 + 1, -(2**24) - 3, 0, 1]
    accumulators += rng.integers(-(2**39) + 1, 2**39, 300).tolist()
    accumulators += rng.integers(-(2**33), 2**33, 300).tolist()
    cases = []
    for t in range(-7, 64):
        for m in (2**23, 2**24 - 1, 0, *rng.integers(2**23, 2**24, 3).tolist()):
            picks = rng.choice(len(accumulators), 12, replace=False)
            cases += [(int(accumulators[i]), int(m), t) for i in picks]
        if t - 24 <= 36:  # M = 2^23: odd multiples of 2^(t-24) are exact ties
            cases += [((2 * k + 1) << max(t - 24, 0), 2**23, t) for k in range(-3, 3)]
    return cases


@pytest.fixture(scope="module")
def wide_harness(tmp_path_factory: pytest.TempPathFactory) -> Path:
    gcc = require_gcc()
    folder = tmp_path_factory.mktemp("runtime_wide")
    (folder / "eightbit_runtime.h").write_text(runtime_header())
    (folder / "main.c").write_text(_WIDE_HARNESS)
    binary = folder / "runtime_wide_check"
    subprocess.run(
        [gcc, *CFLAGS, "-I", str(folder), str(folder / "main.c"), "-o", str(binary)], check=True
    )
    return binary


@pytest.mark.parametrize("seed", [0, 1])
def test_eb_rescale_wide_is_the_engine_definition(wide_harness: Path, seed: int) -> None:
    """The C of (E.13a) against ``requantize_wide_reference`` and, where it does not
    saturate, against the exact float32 rule ``requantize_int`` (Python integers)."""
    cases = _wide_cases(seed)
    feed = "\n".join(f"{a} {m} {t}" for a, m, t in cases) + "\n"
    done = subprocess.run(
        [str(wide_harness)], input=feed, capture_output=True, text=True, check=True
    )
    lines = done.stdout.split("\n")
    for (acc, m, t), line in zip(cases, lines, strict=False):
        rescaled, stored = (int(v) for v in line.split())
        engine = int(requantize_wide_reference(np.int64(acc), m, 24 - t))
        assert rescaled == engine, (acc, m, t)
        exact = requantize_int(acc, m, 24 - t)
        saturated = engine == (2**40 if exact > 0 else -(2**40)) and abs(exact) >= 2**37
        assert engine == exact or saturated, (acc, m, t)  # ±2^40: the same after any clamp
        assert stored == min(max(exact, -32768), 32767), (acc, m, t)
    assert len(lines) == len(cases) + 1
