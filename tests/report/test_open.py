"""``eightbit report --open``: the written page goes to ``webbrowser``; no browser, no error."""

from __future__ import annotations

import webbrowser
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from eightbit.cli import _Group
from eightbit.cli.report import report_command
from tests.analysis.helpers import Files, write_files


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    return write_files(tmp_path_factory.mktemp("open"))


class FakeBrowsers:
    """Stands in for ``webbrowser``: what was opened, and whether the page existed then."""

    def __init__(self, *, exists: bool = True, starts: bool = True) -> None:
        self.exists, self.starts = exists, starts
        self.opened: list[tuple[str, bool]] = []

    def get(self, using: str | None = None) -> object:
        if not self.exists:
            raise webbrowser.Error("could not locate runnable browser")
        return object()

    def open(self, url: str, new: int = 0, autoraise: bool = True) -> bool:
        page = Path(url.removeprefix("file://"))
        self.opened.append((url, page.is_file()))
        return self.starts


def run(monkeypatch: pytest.MonkeyPatch, fake: FakeBrowsers, files: Files, *extra: str) -> Result:
    monkeypatch.setattr(webbrowser, "get", fake.get)
    monkeypatch.setattr(webbrowser, "open", fake.open)
    group = _Group()
    group.add_command(report_command)
    args = [str(files.float_model), str(files.int8_model), "--data", str(files.data)]
    return CliRunner().invoke(group, ["report", *args, "--latency-runs", "0", *extra])


def test_open_shows_the_written_page(
    monkeypatch: pytest.MonkeyPatch, files: Files, tmp_path: Path
) -> None:
    fake = FakeBrowsers()
    page = tmp_path / "report.html"
    result = run(monkeypatch, fake, files, "-o", str(page), "--open")
    assert result.exit_code == 0, result.output
    assert fake.opened == [(page.resolve().as_uri(), True)]  # written before it was opened
    assert result.stdout.splitlines()[-1] == f"opened {page} in the web browser"


@pytest.mark.parametrize(
    "fake", [FakeBrowsers(exists=False), FakeBrowsers(starts=False)], ids=["none", "fails"]
)
def test_no_browser_is_no_error(
    monkeypatch: pytest.MonkeyPatch, files: Files, tmp_path: Path, fake: FakeBrowsers
) -> None:
    page = tmp_path / "report.html"
    result = run(monkeypatch, fake, files, "-o", str(page), "--open")
    assert result.exit_code == 0, result.output
    assert page.is_file() and result.stderr == ""
    assert result.stdout.splitlines()[-1] == f"no web browser found here: open {page} yourself"


def test_without_open_no_browser_is_asked(
    monkeypatch: pytest.MonkeyPatch, files: Files, tmp_path: Path
) -> None:
    fake = FakeBrowsers()
    result = run(monkeypatch, fake, files, "-o", str(tmp_path / "report.html"))
    assert result.exit_code == 0, result.output
    assert fake.opened == [] and len(result.stdout.splitlines()) == 1  # only "wrote ..."
