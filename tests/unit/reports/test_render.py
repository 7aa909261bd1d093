"""Renderings: JSON and CSV keep raw values for machines; the table is for people."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, date, datetime
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from reports.html import render_html
from reports.model import Report, Section
from reports.render import display, render_csv, render_json, render_table

AT = datetime(2025, 3, 1, 10, 2, tzinfo=UTC)
REPORT = Report(
    "demo",
    "Demo",
    (
        Section("a", "First", ("name", "count", "error_rate", "at"), (("x", 3, 0.125, AT),)),
        Section("b", "Second", ("day", "amount"), ((date(2025, 3, 1), Decimal("1.5")),), "note"),
    ),
)


def test_json_keeps_fractions_and_writes_times_in_rfc3339() -> None:
    document = json.loads(render_json(REPORT))
    assert document["sections"]["a"] == [
        {"name": "x", "count": 3, "error_rate": 0.125, "at": "2025-03-01T10:02:00+00:00"}
    ]
    assert document["sections"]["b"] == [{"day": "2025-03-01", "amount": 1.5}]
    assert "passed" not in document


def test_csv_of_one_section_reads_back_as_its_rows() -> None:
    rows = list(csv.reader(io.StringIO(render_csv(REPORT, "a"))))
    assert rows == [["name", "count", "error_rate", "at"], ["x", "3", "0.125", AT.isoformat()]]


def test_table_shows_rates_as_percentages_and_the_verdict() -> None:
    console = Console(file=io.StringIO(), width=120, record=True)
    render_table(Report("g", "Gate", REPORT.sections, passed=False), console)
    text = console.export_text()
    assert "12.50 %" in text
    assert "NO-GO" in text
    assert "First" in text
    assert "Second" in text


@given(st.text(max_size=300))
def test_long_text_is_cut_for_people_but_never_for_machines(text: str) -> None:
    shown = display("example", text)
    assert len(shown) <= 80
    section = Section("s", "S", ("example",), ((text,),))
    document = json.loads(render_json(Report("r", "R", (section,))))
    assert document["sections"]["s"][0]["example"] == text


def test_the_html_escapes_what_the_ledger_says() -> None:
    hostile = Section("s", "<b>S</b>", ("reason",), (("<script>alert(1)</script>",),))
    html = render_html(Report("r", "R", (hostile,)))
    assert "<script>alert" not in html
    assert "&lt;script&gt;" in html
