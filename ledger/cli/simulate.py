"""``migration-ledger simulate``: simulated V1/V2 traffic through the shadow runner, for real.

Every operation is routed by the flag client (tailing the flag log), recorded as a decision,
answered by the routed simulated pool and shadowed by the other, and both executions go to
Kafka through the journaled publisher, exactly as a production caller would do it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ledger.cli.options import (
    FLAG_LOG_NOT_READ,
    FLAG_LOG_WAIT_S,
    BootstrapOption,
    DuckdbOption,
    TopicPrefixOption,
    build_settings,
)
from ledger.errors import LedgerError
from ledger.kafka.admin import ensure_topics
from ledger.settings import Settings

if TYPE_CHECKING:
    from rich.console import Console

    from producers.flag_client import FlagClient
    from producers.publisher import Publisher, PublisherStats
    from producers.shadow import ShadowRunner
    from producers.simulator import Incident, Simulator, Traffic

__all__ = ["simulate"]

IncidentOption = Annotated[
    list[str] | None,
    typer.Option(
        "--incident",
        help=(
            "Scripted incident, repeatable: POOL:METRIC(*FACTOR|+AMOUNT)@START[-END], e.g. "
            "'v2:error_rate*5@180s', 'v2:latency*3@2m-4m', 'v2:latency+250ms@60s', "
            "'v2:error_rate[timeout]+0.2@30s', 'v2:diff_rate*10@0s'. Times are in simulated "
            "seconds from the first operation (operation n is at n / rate)."
        ),
    ),
]


def simulate(
    operations: Annotated[int, typer.Option("--operations", "-n", min=1)] = 1000,
    rate: Annotated[float, typer.Option("--rate", "-r", min=0.1, help="Operations/s")] = 50.0,
    sessions: Annotated[int, typer.Option("--sessions", "-s", min=1)] = 200,
    incident: IncidentOption = None,
    seed: Annotated[int, typer.Option("--seed", help="Same seed, same run")] = 0,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, help="Caller threads")] = 4,
    time_scale: Annotated[
        float,
        typer.Option(
            "--time-scale",
            min=0.0,
            help="Sleep this fraction of each simulated latency (0: report it only)",
        ),
    ] = 0.0,
    shadow_timeout: Annotated[
        float, typer.Option("--shadow-timeout", min=0.01, help="Seconds per shadow run")
    ] = 5.0,
    journal: Annotated[
        Path | None,
        typer.Option("--journal", help="Publisher journal [default: in the cache folder]"),
    ] = None,
    environment: Annotated[
        str | None, typer.Option("--environment", help="Environment of every operation")
    ] = None,
    bootstrap_servers: BootstrapOption = None,
    topic_prefix: TopicPrefixOption = None,
    duckdb: DuckdbOption = None,
) -> None:
    """Drive simulated V1/V2 traffic through the shadow runner against the real broker."""
    # Deferred: rich loads only when something is printed; the producers load kafka-python: only the
    # traffic commands need them.
    from rich.console import Console
    from rich.markup import escape

    from producers.simulator import IncidentError, parse_incidents

    console = Console(stderr=False)
    try:
        incidents = parse_incidents(incident or [])
    except IncidentError as exc:
        console.print(f"[red]Error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    settings = build_settings(bootstrap_servers, topic_prefix, duckdb)
    try:
        _run(
            console,
            settings,
            operations=operations,
            rate=rate,
            sessions=sessions,
            incidents=incidents,
            seed=seed,
            concurrency=concurrency,
            time_scale=time_scale,
            shadow_timeout=shadow_timeout,
            journal=journal,
            environment=environment,
        )
    except LedgerError as exc:
        console.print(f"[red]Error:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from None


def _run(
    console: Console,
    settings: Settings,
    *,
    operations: int,
    rate: float,
    sessions: int,
    incidents: tuple[Incident, ...],
    seed: int,
    concurrency: int,
    time_scale: float,
    shadow_timeout: float,
    journal: Path | None,
    environment: str | None,
) -> None:
    # Deferred: rich loads only when something is printed; the producers load kafka-python: only the
    # traffic commands need them.
    from rich.logging import RichHandler
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from producers.flag_client import FlagClient
    from producers.publisher import Publisher
    from producers.shadow import ShadowRunner
    from producers.simulator import Simulator, Traffic, Workload

    _quiet_kafka()
    with console.status(f"Checking the topics on {settings.bootstrap_servers}"):
        ensure_topics(settings, connect_timeout_s=5.0)
    journal_path = journal or (
        settings.cache_dir / "journal" / f"simulate-{settings.topic_prefix or 'default'}.jsonl"
    )
    client = FlagClient(settings).start()
    with console.status("Reading the flag log"):
        if not client.wait_until_current(timeout=FLAG_LOG_WAIT_S):
            console.print(FLAG_LOG_NOT_READ)
    sim = Simulator(seed=seed, incidents=incidents, time_scale=time_scale)
    workload = Workload(seed=seed, sessions=sessions, rate=rate, environments=(environment,))
    publisher = Publisher(settings, journal_path=journal_path).start()
    runner = ShadowRunner(sim.v1, sim.v2, client, publisher, shadow_timeout=shadow_timeout)
    traffic = Traffic(
        runner, workload, simulator=sim, operations=operations, concurrency=concurrency
    )
    progress = Progress(
        TextColumn("[bold]simulate"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[line]}"),
        console=console,
    )
    logging.getLogger("producers").addHandler(RichHandler(console=console, show_path=False))
    try:
        with progress:
            task = progress.add_task("ops", total=operations, line="")
            traffic.start()
            while not traffic.wait(0.25):
                progress.update(
                    task, completed=traffic.completed, line=_line(runner, publisher, client)
                )
            progress.update(
                task, completed=traffic.completed, line=_line(runner, publisher, client)
            )
        traffic.close()
        with console.status("Waiting for the last shadow runs"):
            runner.close(timeout=shadow_timeout + 1)
        with console.status(f"Delivering {publisher.stats.pending} pending events to Kafka"):
            delivered = publisher.flush(60)
    finally:
        traffic.close()
        stats = publisher.close(timeout=5)
        client.close()
    _summary(console, settings, traffic, runner, stats, client, sim, incidents, journal_path)
    if not delivered:
        console.print(
            f"[yellow]{stats.pending} events are still in {journal_path}; "
            "they are sent first on the next run with the same journal.[/yellow]"
        )


def _line(runner: ShadowRunner, publisher: Publisher, client: FlagClient) -> str:
    shadow = runner.stats
    sent = publisher.stats
    kafka = "[green]kafka ok[/green]" if sent.online else "[red]kafka away[/red]"
    return (
        f"v1 {shadow.routed_v1} v2 {shadow.routed_v2} · drops {shadow.shadow_dropped}"
        f" · pending {sent.pending} · {kafka} · flag v{client.version}"
    )


def _quiet_kafka() -> None:
    """kafka-python logs every reconnect attempt; our publisher says what matters once."""
    logging.getLogger("kafka").setLevel(logging.CRITICAL)


def _summary(
    console: Console,
    settings: Settings,
    traffic: Traffic,
    runner: ShadowRunner,
    stats: PublisherStats,
    client: FlagClient,
    sim: Simulator,
    incidents: tuple[Incident, ...],
    journal: Path,
) -> None:
    # Deferred: rich loads only when something is printed.
    from rich.markup import escape
    from rich.table import Table

    shadow = runner.stats
    table = Table(title="Simulation summary", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    rows = [
        ("operations", traffic.completed),
        ("  answered with the pool's own error", traffic.pool_errors),
        ("  errors added by the runner", len(traffic.other_errors)),
        ("decisions to v1", shadow.routed_v1),
        ("decisions to v2", shadow.routed_v2),
        ("shadow runs", shadow.shadow_started),
        ("  dropped (queue full)", shadow.shadow_dropped),
        ("  timed out", shadow.shadow_timeouts),
        ("  recorded as errors", shadow.shadow_errors),
        ("events published", stats.published),
        ("  delivered", stats.delivered),
        ("  journaled while Kafka was away", stats.deferred),
        ("  still pending in the journal", stats.pending),
        ("  failed for good", stats.failed),
        ("Kafka outages", stats.outages),
        ("flag version", client.version),
    ]
    for name, value in rows:
        table.add_row(name, f"{value:,}")
    console.print(table)
    for pool in (sim.v1, sim.v2):
        counts = pool.counts()
        errors = ", ".join(f"{k} {v}" for k, v in sorted(counts["errors"].items())) or "none"
        console.print(
            f"{pool.name}: {counts['calls']:,} calls; errors: {errors}; injected differences: "
            f"{counts['value_differences']} value, {counts['shape_differences']} shape"
        )
    if incidents:
        console.print("incidents: " + escape(", ".join(str(i) for i in incidents)))
    console.print(
        f"topics: {settings.topic('operations')}, {settings.topic('decisions')}; journal: {journal}"
    )
    if traffic.other_errors:
        first = escape(repr(traffic.other_errors[0]))
        console.print(f"[red]first runner error: {first}[/red]")
