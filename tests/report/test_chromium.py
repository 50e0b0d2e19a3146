"""The report in a real browser: headless Chromium renders it (not blank) and runs its script.

The fixture finds ``chromium`` (or ``chromium-browser``); when it is missing and the tests
run as root on Debian, it installs it with ``apt-get update && apt-get install -y
chromium``, as ``make test`` does.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from eightbit.report import write_report
from tests.report.helpers import deep_report

BROWSERS = ("chromium", "chromium-browser")
INSTALL = (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"])
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


def _find() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


@pytest.fixture(scope="session")
def chromium() -> str:
    found = _find()
    if found is None and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for command in INSTALL:
            subprocess.run(command, check=False, capture_output=True, env=environment, timeout=1800)
        found = _find()
    if found is None:
        pytest.skip(
            "Chromium is not installed and cannot be installed here (needs root and apt-get); "
            "install it with: apt-get update && apt-get install -y chromium"
        )
    return found


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("report") / "report.html"
    write_report(deep_report(120), path)
    return path


def run_chromium(browser: str, profile: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [browser, *FLAGS, f"--user-data-dir={profile}", *arguments],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_screenshot_is_not_blank(chromium: str, page: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    run_chromium(
        chromium,
        tmp_path / "profile",
        f"--screenshot={shot}",
        "--window-size=1280,2000",
        page.as_uri(),
    )
    assert shot.is_file(), "Chromium wrote no screenshot"
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float64)
    assert pixels.shape[:2] == (2000, 1280)
    assert pixels.std() > 20  # a blank or single-colour page has (almost) none
    colours = np.unique(pixels.reshape(-1, 3)[::7], axis=0)
    assert len(colours) > 50  # text, tables and cards, not a flat fill
    dark = np.count_nonzero(pixels.mean(axis=2) < 100)
    assert dark > 10_000  # text was drawn (fonts present)


def test_sections_exist_after_the_script_ran(chromium: str, page: Path, tmp_path: Path) -> None:
    result = run_chromium(chromium, tmp_path / "profile", "--dump-dom", page.as_uri())
    dom = result.stdout
    assert re.search(r'<body[^>]*data-ready="true"', dom), "the page's script did not run"
    for section in ("summary", "outputs", "worst", "layers", "ranges", "decisions"):
        assert f'<section id="{section}">' in dom
    head = re.search(r'<table class="sortable" id="layer-table">.*?</thead>', dom, re.S)
    assert head is not None and head.group(0).count('tabindex="0"') == 15  # made sortable
    assert dom.count('<details class="range"') >= 240
