"""``migration-ledger check``: the pre-deployment / go-live checklist, one line per check.

Exit status 1 iff a line is FAIL (warnings are for a human to read, not for a script to stop
on); 2 for bad usage, as typer does. Heavy imports stay inside the command.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated

import typer

from ledger.checks import CheckReport, Thresholds
from ledger.cli.options import BootstrapOption, DuckdbOption, TopicPrefixOption, build_settings
from ledger.errors import LedgerError

__all__ = ["check", "render_table"]


class OutputFormat(StrEnum):
    table = "table"
    json = "json"


_STYLES = {"PASS": "green", "WARN": "yellow", "FAIL": "bold red", "SKIP": "dim"}


def check(
    bootstrap_servers: BootstrapOption = None,
    topic_prefix: TopicPrefixOption = None,
    duckdb: DuckdbOption = None,
    worker_url: Annotated[
        str | None,
        typer.Option(
            "--worker-url",
            help="The worker's web port, e.g. http://127.0.0.1:6066 (/healthz and /metrics).",
        ),
    ] = None,
    flag: Annotated[
        str | None,
        typer.Option("--flag", help="Migration flag name [env MIGRATION_LEDGER_FLAG]"),
    ] = None,
    timeout: Annotated[
        float,
        typer.Option("--timeout", min=0.1, max=60, help="Seconds each probe may wait."),
    ] = 3.0,
    max_worker_lag: Annotated[
        int, typer.Option("--max-worker-lag", min=0, help="Worker lag above this is WARN.")
    ] = 10_000,
    max_sink_age: Annotated[
        float,
        typer.Option("--max-sink-age", min=0, help="Seconds since the sink's last commit: WARN."),
    ] = 300.0,
    max_sink_lag: Annotated[
        int, typer.Option("--max-sink-lag", min=0, help="Sink lag above this is WARN.")
    ] = 10_000,
    output: Annotated[
        OutputFormat, typer.Option("--format", help="table or json.")
    ] = OutputFormat.table,
) -> None:
    """Go-live checks: broker, topics, flag log, worker, sink. Exit 1 if any FAILs."""
    from datetime import UTC, datetime

    from ledger.cli.probes import run_checks

    extra = {} if flag is None else {"flag": flag}
    try:
        settings = build_settings(bootstrap_servers, topic_prefix, duckdb, **extra)
    except ValueError as exc:  # pydantic's ValidationError is one
        typer.secho(f"Error: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(code=2) from None
    thresholds = Thresholds(
        worker_lag=max_worker_lag, sink_age_s=max_sink_age, sink_lag=max_sink_lag
    )
    try:
        result = run_checks(
            settings,
            timeout_s=timeout,
            worker_url=worker_url,
            thresholds=thresholds,
            now=lambda: datetime.now(UTC),
        )
    except LedgerError as exc:
        typer.secho(f"Error: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(code=1) from None
    if output is OutputFormat.json:
        typer.echo(json.dumps(result.to_json(), indent=2))
    else:
        render_table(result)
    raise typer.Exit(code=result.exit_code)


def render_table(result: CheckReport) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title="migration-ledger check", show_lines=True)
    table.add_column("check", no_wrap=True)
    table.add_column("status", no_wrap=True)
    # fold, not ellipsis: the figure is the point of the line, and pipes are 80 columns wide.
    table.add_column("figure", overflow="fold")
    table.add_column("what to do", overflow="fold")
    for finding in result.findings:
        style = _STYLES[finding.status.value]
        # Text, not markup: figures quote error messages such as "[Errno 111] ...".
        table.add_row(
            Text(finding.check),
            Text(finding.status.value, style=style),
            Text(finding.figure),
            Text(finding.action),
        )
    console = Console()
    console.print(table)
    counts = result.counts()
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    verdict = "[green]GO[/]" if result.ok else "[bold red]NO-GO[/]"
    console.print(f"{verdict}: {summary}")
