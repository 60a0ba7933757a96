"""index.html in a real browser (headless Chromium via Playwright) at 1280×800: the numbers that matter
are on screen, sorting, filters, the matrix tab, escaping."""

from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path

import pytest

from poisonbench.cli import main
from poisonbench.leaderboard.store import read_entry, write_entry

from .helpers_report import write_run

CHROMIUM = os.environ.get("POISONBENCH_CHROMIUM", "/usr/bin/chromium")


def _browser_or_skip():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("Playwright for Python is not installed (pip install -e '.[dev]')")
    if not (os.path.isfile(CHROMIUM) or shutil.which(CHROMIUM)):
        pytest.skip(f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium; "
                    "or set POISONBENCH_CHROMIUM)")
    return sync_playwright


def _cli(*args) -> int:
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    return exc.value.code


@pytest.fixture
def page_file(tmp_path) -> Path:
    """A rendered board: six fabricated measured entries plus one whose poison name is a script tag."""
    board = tmp_path / "board"
    (board / "entries").mkdir(parents=True)
    assert _cli("leaderboard", "add", write_run(tmp_path / "run", seeds=(0,)), "--dir", board) == 0
    template = read_entry(next((board / "entries" / "fake").glob("R4__*.json")))
    nasty = copy.deepcopy(template)
    nasty["poison"]["name"] = nasty["poison"]["label"] = "<script>alert(1)</script>"
    nasty["poison"]["applied"] = "sample"
    write_entry(board / "entries" / "fake" / "nasty.json", nasty)
    assert _cli("leaderboard", "render", "--dir", board) == 0
    return board / "index.html"


VIEWPORT = {"width": 1280, "height": 800}  # a laptop


def test_sort_filter_and_escaping_in_chromium(page_file, tmp_path):
    sync_playwright = _browser_or_skip()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport=VIEWPORT)
            dialogs = []
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(page_file.as_uri())
            page.screenshot(path=str(tmp_path / "board.png"))  # what a reader sees first
            assert (tmp_path / "board.png").stat().st_size > 10_000

            def index(header: str) -> int:
                return page.eval_on_selector_all(
                    "#measured thead th", "(hs, name) => hs.findIndex(h => h.textContent === name)", header)

            def column(header: str) -> list[str]:
                return page.eval_on_selector_all(
                    "#measured tbody tr", "(rows, i) => rows.filter(r => r.style.display !== 'none')"
                    ".map(r => r.cells[i].textContent)", index(header))

            # the numbers that matter are on screen without scrolling: peak and final of the first row
            for header in ("peak %", "final %"):
                box = page.locator(f"#measured tbody tr >> nth=0 >> td >> nth={index(header)}").bounding_box()
                assert box is not None and box["x"] >= 0 and box["y"] >= 0
                assert box["x"] + box["width"] <= VIEWPORT["width"], header
                assert box["y"] + box["height"] <= VIEWPORT["height"], header
            first_curve = page.locator("#measured tbody tr >> nth=0 >> svg.spark")
            assert first_curve.count() == 1 and first_curve.locator("circle.peak").count() == 1

            def peaks() -> list[float]:
                return [float(text.split()[0]) for text in column("peak %")]

            page.click("#measured thead th:text-is('final %')")  # leave the rendered order
            page.click("#measured thead th:text-is('peak %')")
            assert peaks() == sorted(peaks()) and len(peaks()) == 7
            assert set(column("poison")[:2]) == {"R4", "<script>alert(1)</script>"}  # equal peaks, as text
            page.click("#measured thead th:text-is('peak %')")
            assert peaks() == sorted(peaks(), reverse=True)
            assert page.get_attribute("#measured thead th:text-is('peak %')", "aria-sort") == "descending"
            page.click("#measured thead th:text-is('poison')")
            assert column("poison") == sorted(column("poison"), key=str.lower)

            page.select_option("#filter-applied", "class")
            assert set(column("applied")) == {"class"} and len(column("applied")) == 3
            page.select_option("#filter-applied", "")
            page.select_option("#filter-threat", "functional")
            assert column("poison") == ["FC"]
            page.select_option("#filter-threat", "")
            assert len(column("applied")) == 7

            page.click("button[aria-controls=tab-matrix]")  # the poison × defense tab
            assert page.is_visible("#tab-matrix") and not page.is_visible("#tab-board")
            assert page.locator("#tab-matrix td[data-peak]").count() == 7
            page.select_option("#matrix-selection", "final")
            finals = page.eval_on_selector_all("#tab-matrix td[data-final]", "tds => tds.map(t => t.textContent)")
            assert finals == page.eval_on_selector_all("#tab-matrix td[data-final]",
                                                      "tds => tds.map(t => t.getAttribute('data-final'))")
            assert dialogs == []  # the script-named poison never ran
        finally:
            browser.close()
