"""``migration-ledger check``: the pre-deployment / go-live checklist, one line per check.

Exit status 1 iff a line is FAIL (warnings are for a human to read, not for a script to stop
on); 2 for bad usage, as typer does. Heavy imports stay inside the command.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from ledger.checks import CheckReport, Finding, Status, Thresholds
from ledger.cli.config import ProfilesOption, profiles_path
from ledger.cli.options import BootstrapOption, DuckdbOption, TopicPrefixOption, build_settings
from ledger.cli.probes import run_checks
from ledger.errors import ConfigurationError, LedgerError
from ledger.profiles import check_profile, load_profiles

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
    env: Annotated[
        str | None,
        typer.Option(
            "--env", help="Validate this environment's profile [env MIGRATION_LEDGER_ENV]"
        ),
    ] = None,
    profiles: ProfilesOption = None,
    profile_only: Annotated[
        bool, typer.Option("--profile-only", help="With --env: only the profile, no probes.")
    ] = False,
) -> None:
    """Go-live checks: broker, topics, flag log, worker, sink. Exit 1 if any FAILs.

    With ``--env NAME``: first the profile ``[env.NAME]`` is validated (unknown keys,
    impossible thresholds, plan stages, topics, secrets); a problem is a FAIL line and the
    probes do not run. ``--profile-only`` stops after the profile.
    """
    extra: dict[str, object] = {} if flag is None else {"flag": flag}
    if env is not None:
        findings = profile_findings(env, profiles_path(profiles))
        if profile_only or any(f.status is Status.FAIL for f in findings):
            _show(CheckReport(tuple(findings)), output)
            raise typer.Exit(code=CheckReport(tuple(findings)).exit_code)
        extra |= {"env": env, "profiles": profiles_path(profiles)}
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
    _show(result, output)
    raise typer.Exit(code=result.exit_code)


def _show(result: CheckReport, output: OutputFormat) -> None:
    if output is OutputFormat.json:
        typer.echo(json.dumps(result.to_json(), indent=2))
    else:
        render_table(result)


def profile_findings(env: str, path: Path) -> list[Finding]:
    """One PASS line for a sound profile, else one FAIL line per problem."""
    try:
        tables = load_profiles(path)
    except ConfigurationError as exc:
        return [Finding("profile", Status.FAIL, str(exc), "fix the profiles file")]
    if env not in tables:
        known = ", ".join(sorted(tables)) or "none"
        return [Finding("profile", Status.FAIL, f"{path}: no [env.{env}] (profiles: {known})", "")]
    checked = check_profile(env, tables[env])
    if checked.ok:
        return [Finding("profile", Status.PASS, f"{path}: [env.{env}] is valid")]
    return [
        Finding("profile", Status.FAIL, problem, f"fix [env.{env}] in {path}")
        for problem in checked.problems
    ]


def render_table(result: CheckReport) -> None:
    # Deferred: rich loads only when something is printed.
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
