"""The report in a real browser: headless Chromium renders it (not blank) and runs its script.

The fixture finds ``chromium`` (or ``chromium-browser``); when it is missing and the tests
run as root on Debian, it installs it with ``apt-get update && apt-get install -y
chromium``, as ``make test`` does.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

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


# --- the pictures at a desktop and a phone width -------------------------------------------

# The test's copy of the page: only the picture sections shown, each figure outlined in a
# colour of its own (red 255, green 0, blue 16 × its number) so the screenshot shows where
# it is; and a probe that writes each figure's section and rendered text into the DOM.
MARKER = """<style>#outputs, #worst, #layers, #ranges, #decisions, #notes { display: none; }
figure.chart, figure.multiple { outline: 4px solid transparent; outline-offset: 2px; }</style>
<script>(function () {
  var figures = document.querySelectorAll("figure.chart, figure.multiple");
  var found = Array.prototype.map.call(figures, function (figure, number) {
    figure.style.outlineColor = "rgb(255, 0, " + 16 * number + ")";
    var svg = figure.querySelector("svg");
    var shown = Array.prototype.filter.call(svg.querySelectorAll("text"), function (text) {
      return text.getComputedTextLength() > 0;
    });
    var scale = svg.getBoundingClientRect().width / svg.viewBox.baseVal.width;
    return {section: figure.closest("section").id,
            fontPx: scale * parseFloat(getComputedStyle(svg).fontSize),
            texts: shown.map(function (text) { return text.textContent; })};
  });
  var probe = document.createElement("pre");
  probe.id = "probe";
  probe.textContent = JSON.stringify(found);
  document.body.appendChild(probe);
})();</script>"""
# (window width, height, colour scheme): the desktop shot is taken in dark mode, so that
# both schemes are drawn without a third run of Chromium.
WIDTHS = {"desktop": (1300, 3200, "dark"), "phone": (390, 4000, "light")}


@pytest.fixture(scope="module")
def marked_page(page: Path) -> Path:
    marked = page.with_name("marked.html")
    marked.write_text(
        page.read_text(encoding="utf-8").replace("</body>", MARKER + "</body>"), encoding="utf-8"
    )
    return marked


def probe(chromium: str, marked_page: Path, profile: Path, window: int) -> list[dict[str, Any]]:
    """What the probe found: each figure's section, its text's size on screen, its texts."""
    dom = run_chromium(
        chromium, profile, f"--window-size={window},3000", "--dump-dom", marked_page.as_uri()
    )
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom.stdout, re.S)
    assert found is not None, "the probe did not run"
    return list(json.loads(html.unescape(found.group(1))))


def _regions(pixels: np.ndarray, count: int) -> dict[int, tuple[int, int, int, int]]:
    """The box (top, bottom, left, right) inside each figure's outline found on screen.

    Only rows and columns with a stretch of the colour count: where two outlines meet,
    their rounded corners blend into a few pixels of another figure's colour.
    """
    red, green, blue = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    boxes = {}
    for number in range(count):
        outline = (red == 255) & (green == 0) & (blue == 16 * number)
        rows = np.flatnonzero(outline.sum(axis=1) >= 20)
        columns = np.flatnonzero(outline.sum(axis=0) >= 20)
        if rows.size and columns.size and rows[-1] - rows[0] > 40:  # whole, not cut off
            boxes[number] = (rows[0] + 6, rows[-1] - 6, columns[0] + 6, columns[-1] - 6)
    return boxes


@pytest.mark.parametrize("width", sorted(WIDTHS))
def test_pictures_are_drawn_and_labelled(
    chromium: str, marked_page: Path, tmp_path: Path, width: str
) -> None:
    window, height, scheme = WIDTHS[width]
    figures = probe(chromium, marked_page, tmp_path / "dom", window)
    sections = [figure["section"] for figure in figures]
    assert sections == ["depth", "slices", "fix"] + ["multiples"] * 12
    for figure in figures[:2]:  # the dB charts: both axes named, ticks drawn
        assert "SQNR (dB)" in figure["texts"]
        assert any(
            text.startswith(("node in graph order", "slice index")) for text in figure["texts"]
        )
        assert sum(text.lstrip("\u2265").isdigit() for text in figure["texts"]) >= 4
    assert {"output SQNR gained (dB)", "parameter bytes added"} <= set(figures[2]["texts"])
    assert all(any(t.startswith("bit position k") for t in f["texts"]) for f in figures[3:])
    # Legible: the charts' text is at least 9 px on screen (a phone scrolls them sideways).
    assert all(figure["fontPx"] >= 9 for figure in figures[:3]), [f["fontPx"] for f in figures]
    shot = tmp_path / "shot.png"
    run_chromium(
        chromium,
        tmp_path / "profile",
        f"--screenshot={shot}",
        f"--window-size={window},{height}",
        *(["--force-dark-mode"] if scheme == "dark" else []),
        marked_page.as_uri(),
    )
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (height, window)
    page_colour = np.median(pixels[:, :, :].mean(axis=2))
    assert page_colour < 60 if scheme == "dark" else page_colour > 200
    boxes = _regions(pixels, len(figures))
    assert sorted(boxes) == list(range(len(figures))), "a figure is missing from the screenshot"
    for number, (top, bottom, left, right) in boxes.items():
        region = pixels[top:bottom, left:right].astype(np.float64)
        assert right - left > 0.8 * (window - 40) or figures[number]["section"] == "multiples"
        background = np.median(region.reshape(-1, 3), axis=0)
        drawn = np.abs(region - background).sum(axis=2) > 60
        assert drawn.mean() > 0.01, f"figure {number} ({figures[number]['section']}) is blank"
        assert len(np.unique(region.reshape(-1, 3)[::5], axis=0)) > 12
