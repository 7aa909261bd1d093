"""Reports built from the DuckDB ledger, rendered as tables, JSON, CSV or HTML; replay, audit.

Every function takes a connection from ``ledger.store.open_reader``. The names below load on
first use, so ``migration-ledger --help`` (which imports the command module) stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ledger.gates import Thresholds
    from reports.audit import AuditResult, audit
    from reports.catalog import REPORTS, ReportOptions, build_report
    from reports.explain import Explained, explain, find_decision
    from reports.gates import load_thresholds
    from reports.html import render_html
    from reports.model import Report, Section
    from reports.reclassify import Reclassification, reclassify
    from reports.render import render_csv, render_json, render_table

__all__ = [
    "REPORTS",
    "AuditResult",
    "Explained",
    "Reclassification",
    "Report",
    "ReportOptions",
    "Section",
    "Thresholds",
    "audit",
    "build_report",
    "explain",
    "find_decision",
    "load_thresholds",
    "reclassify",
    "render_csv",
    "render_html",
    "render_json",
    "render_table",
]

_LAZY = {
    "AuditResult": "reports.audit",
    "audit": "reports.audit",
    "REPORTS": "reports.catalog",
    "ReportOptions": "reports.catalog",
    "build_report": "reports.catalog",
    "Explained": "reports.explain",
    "explain": "reports.explain",
    "find_decision": "reports.explain",
    "Thresholds": "ledger.gates",
    "load_thresholds": "reports.gates",
    "render_html": "reports.html",
    "Report": "reports.model",
    "Section": "reports.model",
    "Reclassification": "reports.reclassify",
    "reclassify": "reports.reclassify",
    "render_csv": "reports.render",
    "render_json": "reports.render",
    "render_table": "reports.render",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'reports' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
