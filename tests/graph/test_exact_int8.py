"""Every session eightbit opens sums u8 x s8 products exactly, whatever the x86 CPU."""

from __future__ import annotations

import onnxruntime as ort
import pytest

from eightbit.graph import make_session, session
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


def _entry(options: ort.SessionOptions, key: str) -> str | None:
    try:
        return options.get_session_config_entry(key)
    except RuntimeError:  # ONNX Runtime's answer for a key that was never set
        return None


@pytest.mark.parametrize("saturates", [True, False])
def test_sessions_ask_for_the_exact_kernels_only_where_the_default_saturates(
    monkeypatch: pytest.MonkeyPatch, saturates: bool
) -> None:
    # Where the default kernels are exact (VNNI) the option changes no output but sends
    # layers to slower kernels (§1.9), so latency measured here would not be a user's.
    monkeypatch.setattr(session, "default_int8_kernels_saturate", lambda: saturates)
    key, value = session.EXACT_INT8_ENTRY
    assert _entry(session._session_options(1, None, "all"), key) == (value if saturates else None)
