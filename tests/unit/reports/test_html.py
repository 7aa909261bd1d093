"""The HTML report in a real browser: headless Chromium lays out and paints every chart.

Needs Debian's ``chromium`` package (CI installs it). Without it these tests skip, saying so.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from reports.catalog import build_report
from reports.html import render_html

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="headless Chromium not installed (apt-get install -y chromium); CI installs it",
)


def dump_dom(page: Path, tmp_path: Path) -> str:
    """The DOM after Chromium loaded the page and ran its script (no network involved)."""
    assert CHROMIUM is not None
    completed = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",  # tests may run as root in containers
            "--disable-gpu",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    return completed.stdout


def marks_in(html: str, chart: str) -> int:
    """Marks written into one chart's SVG (points, bars, markers, lines)."""
    match = re.search(rf'<svg class="chart" data-chart="{chart}".*?</svg>', html, re.S)
    assert match is not None, f"no {chart} chart in the page"
    body = match.group(0)
    return len(re.findall(r'class="(?:point|bar|marker [a-z_]+|series)"', body))


@needs_chromium
def test_every_chart_of_the_daily_report_is_drawn_by_the_browser(con: Any, tmp_path: Path) -> None:
    html = render_html(build_report(con, "daily"), source="test ledger")
    page = tmp_path / "daily.html"
    page.write_text(html)
    dom = dump_dom(page, tmp_path)
    found = re.search(r"data-charts-drawn=\"([^\"]+)\"", dom)
    assert found is not None, "the page's script did not run"
    drawn = json.loads(found.group(1).replace("&quot;", '"'))
    assert set(drawn) == {"rollout", "latency", "categories"}
    for chart, count in drawn.items():
        assert count > 0, f"{chart}: nothing painted"
        # Every mark written was laid out with a non-empty box.
        assert count == marks_in(html, chart), chart


@needs_chromium
def test_the_rollout_chart_shows_the_rollbacks_in_the_browser(con: Any, tmp_path: Path) -> None:
    report = build_report(con, "rollout")
    page = tmp_path / "rollout.html"
    page.write_text(render_html(report))
    dom = dump_dom(page, tmp_path)
    (chart,) = report.charts
    markers = re.findall(r'<g class="marker rollback"', dom)
    assert len(markers) == len(chart.markers) > 0  # type: ignore[union-attr]


def test_the_html_file_loads_nothing_from_anywhere_else(con: Any) -> None:
    html = render_html(build_report(con, "daily"))
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", html)
    assert "@import" not in html
    assert "<svg" in html
