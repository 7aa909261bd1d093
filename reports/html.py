"""The HTML rendering: one self-contained file (inline CSS and SVG, no network, no CDN).

The page is ``templates/report.html`` filled with the report's tables and charts; it opens
from a mail attachment or an air-gapped laptop the same as from a web server.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from html import escape
from pathlib import Path
from string import Template

from reports.charts import svg
from reports.model import Report, Section
from reports.render import display

__all__ = ["render_html"]


def _template() -> Template:
    # Beside this module (package data): read by path, which also works from a source tree.
    return Template((Path(__file__).parent / "templates" / "report.html").read_text("utf-8"))


def _cell_class(column: str, value: object) -> str:
    if column == "status" and isinstance(value, str):
        return value.lower()
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        return "num"
    return ""


def _table(section: Section) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in section.columns)
    rows = []
    for row in section.rows:
        cells = []
        for column, value in zip(section.columns, row, strict=True):
            css = _cell_class(column, value)
            attr = f' class="{css}"' if css else ""
            full = "" if value is None else str(value)
            shown = display(column, value)
            title = f' title="{escape(full)}"' if shown != full and full else ""
            cells.append(f"<td{attr}{title}>{escape(shown)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    if not rows:
        rows.append(f'<tr><td colspan="{len(section.columns)}">(none)</td></tr>')
    note = f'<p class="note">{escape(section.note)}</p>' if section.note else ""
    return (
        f'<section class="report-section" data-section="{escape(section.name)}">'
        f"<h2>{escape(section.title)}</h2>{note}"
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div></section>"
    )


def render_html(report: Report, *, source: str = "", generated_at: datetime | None = None) -> str:
    """The report as one HTML document; ``source`` names the ledger it was built from."""
    when = (generated_at or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M:%S UTC")
    meta = f"generated {when}"
    if source:
        meta += f" from {escape(source)}"
    for key, value in report.meta.items():
        meta += f" · {escape(str(key))}: {escape(str(value))}"
    verdict = ""
    if report.passed is not None:
        css, word = ("pass", "GO") if report.passed else ("fail", "NO-GO")
        verdict = f'<div class="verdict {css}" data-verdict="{word}">{word}</div>'
    notes = "".join(f'<p class="note">{escape(n)}</p>' for n in report.notes)
    charts = "\n".join(f"<figure>{svg(chart)}</figure>" for chart in report.charts)
    return _template().substitute(
        title=escape(f"migration-ledger · {report.title}"),
        meta=meta,
        verdict=verdict,
        notes=notes,
        charts=charts,
        sections="\n".join(_table(section) for section in report.sections),
    )
