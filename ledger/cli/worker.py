"""``migration-ledger worker`` and ``migration-ledger topics ensure``.

Heavy imports (faust, kafka) stay inside the command functions so ``--help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ledger.cli.options import (
    BootstrapOption,
    DuckdbOption,
    TopicPrefixOption,
    build_settings,
    fail,
)
from ledger.errors import ConfigurationError, LedgerError
from ledger.kafka.admin import ensure_topics
from ledger.kafka.topics import TOPIC_SPECS, topic_name
from ledger.settings import Settings

if TYPE_CHECKING:
    from streams.app import LedgerApp

__all__ = ["run_worker", "topics_app", "worker"]

topics_app: typer.Typer = typer.Typer(
    name="topics",
    help="Create and check the ledger's Kafka topics.",
    no_args_is_help=True,
)


@topics_app.command("ensure")
def ensure(
    bootstrap_servers: BootstrapOption = None,
    topic_prefix: TopicPrefixOption = None,
    duckdb: DuckdbOption = None,
    replication_factor: Annotated[
        int, typer.Option("--replication-factor", min=1, help="For topics that get created.")
    ] = 1,
    connect_timeout: Annotated[
        float, typer.Option("--connect-timeout", min=0.1, help="Seconds to reach the broker.")
    ] = 10.0,
) -> None:
    """Create missing topics; report partition or retention mismatches (exit 3 if any)."""
    from rich.console import Console
    from rich.table import Table

    settings = build_settings(bootstrap_servers, topic_prefix, duckdb)
    try:
        report = ensure_topics(
            settings, replication_factor=replication_factor, connect_timeout_s=connect_timeout
        )
    except LedgerError as exc:
        raise fail(str(exc)) from None
    table = Table(title="Kafka topics")
    for column in ("topic", "key", "partitions", "retention", "status"):
        table.add_column(column)
    for spec in TOPIC_SPECS:
        name = topic_name(settings, spec.logical)
        status = "created" if name in report.created else "present"
        problems = [str(m) for m in report.mismatches if m.topic == name]
        retention = "forever" if spec.retention_ms < 0 else f"{spec.retention_ms // 86_400_000} d"
        table.add_row(
            name,
            spec.key,
            str(spec.partitions_for(settings)),
            retention,
            "MISMATCH: " + "; ".join(m.split(": ", 1)[1] for m in problems) if problems else status,
        )
    Console().print(table)
    if report.mismatches:
        raise fail(
            f"{len(report.mismatches)} mismatch(es) on existing topics; ensure never alters "
            "them: recreate them or change the settings",
            code=3,
        )


def worker(
    bootstrap_servers: BootstrapOption = None,
    topic_prefix: TopicPrefixOption = None,
    duckdb: DuckdbOption = None,
    pairing_timeout: Annotated[
        float | None,
        typer.Option(
            "--pairing-timeout",
            min=0.001,
            help="Seconds to wait for the other half [env MIGRATION_LEDGER_PAIRING_TIMEOUT]",
            show_default=False,
        ),
    ] = None,
    web_port: Annotated[
        int, typer.Option("--web-port", min=1, max=65535, help="Liveness and /metrics port.")
    ] = 6066,
    without_web: Annotated[
        bool, typer.Option("--without-web", help="Do not serve liveness and /metrics.")
    ] = False,
    rules: Annotated[
        Path | None,
        typer.Option("--rules", exists=True, dir_okay=False, help="Comparison rules (TOML)."),
    ] = None,
    app_id: Annotated[
        str | None,
        typer.Option("--app-id", help="Consumer group and changelog prefix [default: PREFIX+ml]"),
    ] = None,
    loglevel: Annotated[str, typer.Option("--loglevel", help="debug, info, warning...")] = "info",
) -> None:
    """Run the stream processors (pairing, flag log writer, ...) until SIGTERM or Ctrl-C."""
    extra = {} if pairing_timeout is None else {"pairing_timeout": pairing_timeout}
    settings = build_settings(bootstrap_servers, topic_prefix, duckdb, **extra)
    try:
        _check_topics(settings)
        ledger_app = _create(settings, app_id, web_port, without_web, rules)
    except LedgerError as exc:
        raise fail(str(exc)) from None
    run_worker(ledger_app.app, loglevel=loglevel)


def _check_topics(settings: Settings) -> None:
    """Create missing topics; refuse to start when co-partitioning cannot hold."""

    report = ensure_topics(settings)
    for mismatch in report.mismatches:
        typer.secho(f"Warning: {mismatch}", err=True, fg=typer.colors.YELLOW)
    if report.partition_mismatches():
        raise ConfigurationError(
            "topic partitions differ from MIGRATION_LEDGER_PARTITIONS="
            f"{settings.partitions}; the pairing table must be co-partitioned with its input"
        )


def _create(
    settings: Settings, app_id: str | None, web_port: int, without_web: bool, rules: Path | None
) -> LedgerApp:
    from streams.app import create_app

    return create_app(
        settings,
        app_id=app_id,
        web_enabled=not without_web,
        web_port=web_port,
        rules_path=rules,
    )


def run_worker(app: Any, *, loglevel: str = "info") -> None:
    """Run a faust app until SIGTERM/SIGINT; faust's worker stops agents and commits first."""
    from faust.worker import Worker

    worker = Worker(app, loglevel=loglevel, quiet=True)
    # faust's start-up spinner sets the root logger to DEBUG so that every record turns it;
    # that makes every library debug call build a record (a third of the CPU time here).
    worker.spinner = None
    worker.execute_from_commandline()
