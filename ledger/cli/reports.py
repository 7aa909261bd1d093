"""``migration-ledger report | replay | audit | reclassify``: read the ledger, explain it.

All four are readers: they run beside the sink (each takes a snapshot of the committed
segments) and never need Kafka. DuckDB loads inside the commands. Exit codes: 0 fine,
1 a finding (NO-GO, a decision that disagrees, a broken chain), 2 bad input.
"""

from __future__ import annotations

import io
import sys
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ledger.cli.merkle import checkpoint_audit
from ledger.cli.options import ArchiveOption, DuckdbOption, build_settings, fail
from ledger.comparison import load_rules
from ledger.errors import LedgerError

if TYPE_CHECKING:
    from reports.model import Report

__all__ = ["audit", "reclassify", "replay", "report"]


class Format(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"
    html = "html"


class TextFormat(StrEnum):
    table = "table"
    json = "json"


def _open(duckdb: Path | None, archive: Path | None = None) -> tuple[Any, Path]:
    # Deferred: DuckDB loads only when the ledger is read or written.
    from ledger.store import open_reader

    settings = build_settings(duckdb=duckdb)
    try:
        return open_reader(settings.duckdb, archive=archive), settings.duckdb
    except LedgerError as exc:
        raise fail(str(exc), code=2) from None


def _when(text: str | None, option: str) -> datetime | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise fail(
            f"{option}: {text!r} is not an RFC 3339 time (2025-03-01T10:02:00+00:00)", code=2
        ) from None
    if value.tzinfo is None:
        raise fail(f"{option}: {text!r} has no UTC offset (add +00:00 or Z)", code=2)
    return value


def _emit(text: str, out: Path | None) -> None:
    if out is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        sys.stdout.flush()
        return
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, "utf-8")
    except OSError as exc:
        raise fail(f"cannot write {out}: {exc}", code=2) from None
    typer.echo(f"wrote {out}", err=True)


def _console(out: Path | None) -> Any:
    # Deferred: rich loads only when something is printed.
    from rich.console import Console

    if out is None:
        return Console()
    return Console(file=io.StringIO(), record=True, width=160, force_terminal=False)


def render(
    report: Report, fmt: Format, out: Path | None, *, source: str, section: str | None
) -> None:
    """Print (or write to ``out``) ``report`` in ``fmt``."""
    # Deferred: the reports load DuckDB: only the reading commands need them.
    from reports.html import render_html
    from reports.render import render_csv, render_json, render_table

    if fmt is Format.json:
        _emit(render_json(report), out)
    elif fmt is Format.csv:
        try:
            _emit(render_csv(report, section), out)
        except KeyError as exc:
            raise fail(str(exc.args[0]), code=2) from None
    elif fmt is Format.html:
        _emit(render_html(report, source=source), out)
    else:
        console = _console(out)
        render_table(report, console)
        if out is not None:
            _emit(console.export_text(), out)


def report(
    name: Annotated[
        str,
        typer.Argument(
            help="summary, performance, rollout, go-no-go, daily, verdicts, compatibility, "
            "cleanup or post-migration."
        ),
    ],
    fmt: Annotated[Format, typer.Option("--format", "-f", help="table, json, csv or html")] = (
        Format.table
    ),
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write to this file.")] = None,
    since: Annotated[
        str | None, typer.Option(help="Only events at or after this time (RFC 3339).")
    ] = None,
    until: Annotated[str | None, typer.Option(help="Only events before this time.")] = None,
    interval: Annotated[
        str | None,
        typer.Option(help="Time bucket of 'over time' tables and charts, e.g. '15 minutes'."),
    ] = None,
    top: Annotated[int, typer.Option(min=1, help="Rows of 'top' tables.")] = 10,
    thresholds: Annotated[
        Path | None, typer.Option(help="go-no-go: TOML file of thresholds (\\[go_no_go] table).")
    ] = None,
    section: Annotated[
        str | None, typer.Option(help="csv: only this section, as plain CSV.")
    ] = None,
    flag: Annotated[
        str | None, typer.Option(help="Flag name \\[env MIGRATION_LEDGER_FLAG]")
    ] = None,
    raw: Annotated[
        bool,
        typer.Option(
            "--raw",
            help="Read raw rows, not the per-minute rollups (same figures, full scans; "
            "go-no-go then re-decides every decision).",
        ),
    ] = False,
    rules: Annotated[
        Path | None, typer.Option(help="compatibility: the comparison rules in use.")
    ] = None,
    breaking_share: Annotated[
        float,
        typer.Option(
            min=0.0001,
            max=1.0,
            help="compatibility: share of answers that makes a change breaking.",
        ),
    ] = 0.05,
    draft_rules: Annotated[
        Path | None, typer.Option(help="compatibility: write the draft rules (TOML) here.")
    ] = None,
    pairs: Annotated[
        int, typer.Option(min=1, help="compatibility: analyse a seeded sample of this many pairs.")
    ] = 100_000,
    min_days: Annotated[
        float, typer.Option(min=0.0, help="cleanup: days V2 must have been at 100 %.")
    ] = 7.0,
    now: Annotated[
        str | None, typer.Option(help="cleanup: judge as of this time (default: the clock).")
    ] = None,
    seed: Annotated[int, typer.Option(help="post-migration: seed of the bootstrap.")] = 0,
    duckdb: DuckdbOption = None,
    archive: ArchiveOption = None,
) -> None:
    """Build a report over the ledger. go-no-go and cleanup exit 1 when not passed."""
    # Deferred: DuckDB loads only when the ledger is read or written; the reports load DuckDB: only
    # the reading commands need them.
    import duckdb as duck

    from reports.catalog import REPORTS, ReportOptions, build_report

    if name not in REPORTS:
        raise fail(f"unknown report {name!r}; choose one of: {', '.join(REPORTS)}", code=2)
    if thresholds is not None and not thresholds.is_file():
        raise fail(f"--thresholds: no such file {thresholds}", code=2)
    settings = build_settings(duckdb=duckdb, flag=flag)
    options = ReportOptions(
        flag=settings.flag,
        since=_when(since, "--since"),
        until=_when(until, "--until"),
        interval=interval,
        top=top,
        thresholds=thresholds,
        charts=fmt is Format.html,
        rollups=not raw,
        extra=_extra(
            name,
            rules=rules,
            breaking_share=breaking_share,
            pairs=pairs,
            min_days=min_days,
            now=now,
            seed=seed,
        ),
    )
    con, path = _open(duckdb, archive)
    try:
        built = build_report(con, name, options)
    except (LedgerError, ValueError) as exc:
        raise fail(str(exc), code=2) from None
    except duck.Error as exc:
        raise fail(f"report {name} failed: {exc}", code=2) from None
    finally:
        con.close()
    render(built, fmt, out, source=str(path), section=section)
    if draft_rules is not None and name == "compatibility":
        lines = [row[0] for row in built.section("draft_rules").rows]
        _emit("\n".join(lines) + "\n", draft_rules)
    if built.passed is False:
        raise typer.Exit(code=1)


def _extra(
    name: str,
    *,
    rules: Path | None,
    breaking_share: float,
    pairs: int,
    min_days: float,
    now: str | None,
    seed: int,
) -> dict[str, Any]:
    """The options only one report reads, checked here (bad input exits 2)."""
    if name == "compatibility":
        try:
            rule_set = load_rules(rules)
        except (LedgerError, OSError) as exc:
            raise fail(str(exc), code=2) from None
        return {"rules": rule_set, "breaking_share": breaking_share, "pair_limit": pairs}
    if name == "cleanup":
        # The one clock read of the cleanup report: the report itself takes the time given.
        when = _when(now, "--now") or datetime.now(UTC)
        return {"min_days": min_days, "now": when}
    if name == "post-migration":
        return {"seed": seed}
    return {}


def replay(
    session: Annotated[
        str | None, typer.Option("--session", help="The session whose decision to explain.")
    ] = None,
    at: Annotated[
        str | None, typer.Option("--at", help="The session's decision in effect at this time.")
    ] = None,
    correlation_id: Annotated[
        str | None, typer.Option("--correlation-id", help="The decision of this operation.")
    ] = None,
    fmt: Annotated[TextFormat, typer.Option("--format", "-f")] = TextFormat.table,
    duckdb: DuckdbOption = None,
) -> None:
    """Explain a recorded decision: flag version, rule, bucket, recomputed beside recorded.

    Exits 1 when the recomputed decision differs from the recorded one.
    """
    # Deferred: DuckDB loads only when the ledger is read or written; the reports load DuckDB: only
    # the reading commands need them.
    import duckdb as duck

    from reports.explain import explain, render_explanation

    if session is None and correlation_id is None:
        raise fail("give --session (with --at or --correlation-id) or --correlation-id", code=2)
    if at is not None and correlation_id is not None:
        raise fail("give either --at or --correlation-id, not both", code=2)
    when = _when(at, "--at")
    con, _ = _open(duckdb)
    try:
        explanation = explain(con, session_id=session, at=when, correlation_id=correlation_id)
    except LedgerError as exc:
        raise fail(str(exc), code=2) from None
    except duck.Error as exc:
        raise fail(f"replay failed: {exc}", code=2) from None
    finally:
        con.close()
    typer.echo(render_explanation(explanation, fmt.value))
    if not explanation.matches:
        raise typer.Exit(code=1)


def audit(
    sample: Annotated[
        int, typer.Option("--sample", min=0, help="Decisions also re-decided in Python.")
    ] = 1000,
    seed: Annotated[int | None, typer.Option(help="Seed of the random sample.")] = None,
    fmt: Annotated[TextFormat, typer.Option("--format", "-f")] = TextFormat.table,
    duckdb: DuckdbOption = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option("--checkpoint", help="Held checkpoints (`checkpoint --out`) to check."),
    ] = None,
    public_key: Annotated[
        Path | None, typer.Option("--public-key", help="Key that signed the checkpoints.")
    ] = None,
    columns: Annotated[
        bool,
        typer.Option(
            help="With --checkpoint: also compare typed columns with each row's wire "
            "(finds in-place Parquet edits the trees cannot see; parses every wire: slow)."
        ),
    ] = False,
    full: Annotated[
        bool,
        typer.Option(
            "--full",
            help="Re-decide every decision now (default: kept per-segment verdicts, "
            "re-deciding only new or changed segments).",
        ),
    ] = False,
    archive: ArchiveOption = None,
) -> None:
    """Recompute every recorded decision (SQL) and a sample (Python); verify the flag chain.

    With ``--checkpoint``: also prove that every held tree is a prefix of today's ledger.
    Exits 1 when a decision disagrees, the chain is broken or a checkpoint fails, naming the
    version, or the table, partition and offsets.
    """
    # Deferred: DuckDB loads only when the ledger is read or written; the reports load DuckDB: only
    # the reading commands need them.
    import duckdb as duck

    from reports.audit import audit as run_audit
    from reports.audit import render_audit
    from reports.kept_verdicts import incremental_audit
    from reports.queries import scope

    con, path = _open(duckdb, archive)
    try:
        if full:
            result = run_audit(con, sample=sample, seed=seed)
        else:
            scope(con)
            result = incremental_audit(con, sample=sample, seed=seed)
    except LedgerError as exc:
        raise fail(str(exc), code=2) from None
    except duck.Error as exc:
        raise fail(f"audit failed: {exc}", code=2) from None
    finally:
        con.close()
    typer.echo(render_audit(result, fmt.value, source=str(path)))
    held_ok = True
    if checkpoint is not None:
        try:
            text, held_ok = checkpoint_audit(path, checkpoint, public_key, columns=columns)
        except LedgerError as exc:
            raise fail(str(exc), code=2) from None
        typer.echo(text)
    if not result.ok or not held_ok:
        raise typer.Exit(code=1)


def reclassify(
    rules: Annotated[Path, typer.Option("--rules", help="The comparison rules to try.")],
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N stored pairs.")] = None,
    examples: Annotated[int, typer.Option(min=0, help="Changed pairs to list.")] = 10,
    fmt: Annotated[TextFormat, typer.Option("--format", "-f")] = TextFormat.table,
    duckdb: DuckdbOption = None,
) -> None:
    """Re-run the comparisons of stored pairs under other rules; print how categories move."""
    # Deferred: DuckDB loads only when the ledger is read or written; the reports load DuckDB: only
    # the reading commands need them.
    import duckdb as duck

    from reports.reclassify import reclassify as run
    from reports.reclassify import render_reclassification

    try:
        rule_set = load_rules(rules)
    except (LedgerError, OSError) as exc:
        raise fail(str(exc), code=2) from None
    con, _ = _open(duckdb)
    try:
        result = run(con, rule_set, limit=limit, examples=examples)
    except LedgerError as exc:
        raise fail(str(exc), code=2) from None
    except duck.Error as exc:
        raise fail(f"reclassify failed: {exc}", code=2) from None
    finally:
        con.close()
    typer.echo(render_reclassification(result, fmt.value))
