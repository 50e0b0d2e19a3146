"""The finetune section is registered (its rows need MobileNetV2: `make bench`)."""

from __future__ import annotations

from benchmarks import run


def test_the_section_is_registered() -> None:
    assert "finetune" in run.SECTIONS
