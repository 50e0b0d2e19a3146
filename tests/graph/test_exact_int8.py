"""Every session eightbit opens sums u8 x s8 products exactly, whatever the x86 CPU."""

from __future__ import annotations

import onnxruntime as ort
import pytest

from eightbit.graph import make_session
from eightbit.graph.session import (
    SATURATION_PROBE_INPUT,
    default_int8_kernels_saturate,
    saturation_probe,
)


def _default_session_output() -> int:
    session = ort.InferenceSession(
        saturation_probe().SerializeToString(), providers=["CPUExecutionProvider"]
    )
    return int(session.run(None, {"x": SATURATION_PROBE_INPUT})[0].ravel()[0])


def test_sessions_sum_unsigned_by_signed_products_exactly() -> None:
    # 8 x 255 x 127 / 1000 = 259.08 -> 255 (uint8); a CPU that adds pairs in 16 bits with
    # saturation (x86 without VNNI, default session) gives 4 x 32767 / 1000 = 131.
    session = make_session(saturation_probe(), threads=1)
    assert int(session.run(None, {"x": SATURATION_PROBE_INPUT})[0].ravel()[0]) == 255


def test_the_probe_tells_what_a_default_session_computes() -> None:
    y = _default_session_output()
    assert y in (131, 255)
    assert default_int8_kernels_saturate() == (y == 131)


def test_on_a_saturating_cpu_only_the_default_session_differs() -> None:
    if not default_int8_kernels_saturate():
        pytest.skip("this CPU's default int8 kernels are exact (VNNI, or not x86)")
    assert _default_session_output() == 131
