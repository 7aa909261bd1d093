"""Terminal table, JSON and CSV renderings of a :class:`Report` (HTML is ``reports.html``).

JSON and CSV keep raw values (rates as fractions, timestamps as RFC 3339) for machines; the
table shows them for people (rates as percentages, long text cut).
"""

from __future__ import annotations

import csv
import io
import json
import math
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from rich.console import Console
from rich.table import Table

from reports.model import Report, Section

__all__ = ["FORMATS", "display", "plain", "render_csv", "render_json", "render_table"]

FORMATS = ("table", "json", "csv", "html")

_PERCENT_SUFFIXES = ("_rate", "_share", "share")
_MAX_CELL = 80


def plain(value: Any) -> Any:
    """A JSON-able value: timestamps as RFC 3339 text, decimals as numbers, NaN as null."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    return value


def display(column: str, value: Any) -> str:
    """A cell as people read it: rates as percentages, floats short, long text cut."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float | Decimal) and column.endswith(_PERCENT_SUFFIXES):
        return f"{float(value) * 100:.2f} %"
    if isinstance(value, float | Decimal):
        number = float(value)
        if number.is_integer() and abs(number) < 1e15:
            return f"{int(number):,}" if abs(number) >= 10_000 else str(int(number))
        return f"{number:,.3f}".rstrip("0").rstrip(".") if abs(number) < 1e6 else f"{number:,.0f}"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S%z").replace("+0000", "Z")
    text = str(value)
    return text if len(text) <= _MAX_CELL else text[: _MAX_CELL - 1] + "…"


def _rich_table(section: Section) -> Table:
    table = Table(title=section.title, title_justify="left", caption=section.note or None)
    for index, column in enumerate(section.columns):
        numeric = any(
            isinstance(row[index], int | float | Decimal) and not isinstance(row[index], bool)
            for row in section.rows
        )
        table.add_column(column, justify="right" if numeric else "left", overflow="fold")
    for row in section.rows:
        table.add_row(*(display(c, v) for c, v in zip(section.columns, row, strict=True)))
    if not section.rows:
        table.add_row(*(["(none)"] + [""] * (len(section.columns) - 1)))
    return table


def render_table(report: Report, console: Console) -> None:
    console.print(f"[bold]{report.title}[/bold]")
    for note in report.notes:
        console.print(note)
    for section in report.sections:
        console.print(_rich_table(section))
    if report.passed is not None:
        verdict = "[green]GO[/green]" if report.passed else "[red]NO-GO[/red]"
        console.print(f"verdict: {verdict}")


def render_json(report: Report) -> str:
    document: dict[str, Any] = {
        "report": report.name,
        "title": report.title,
        "meta": plain(dict(report.meta)),
        "sections": {
            s.name: [{k: plain(v) for k, v in r.items()} for r in s.records()]
            for s in report.sections
        },
    }
    if report.passed is not None:
        document["passed"] = report.passed
    if report.notes:
        document["notes"] = list(report.notes)
    return json.dumps(document, indent=2, ensure_ascii=False)


def _csv_cell(value: Any) -> Any:
    value = plain(value)
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False)
    return "" if value is None else value


def render_csv(report: Report, section: str | None = None) -> str:
    """One section as plain CSV, or every section: ``# name`` line, header, rows, blank line."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    chosen = [report.section(section)] if section is not None else list(report.sections)
    for i, part in enumerate(chosen):
        if section is None:
            if i:
                out.write("\n")
            out.write(f"# {part.name}\n")
        writer.writerow(part.columns)
        for row in part.rows:
            writer.writerow([_csv_cell(v) for v in row])
    return out.getvalue()
