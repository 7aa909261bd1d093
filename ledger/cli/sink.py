"""``migration-ledger sink``: store every ledger topic in the ledger folder, exactly once.

aiokafka, DuckDB and pyarrow load inside the command so ``--help`` stays fast.
"""

from __future__ import annotations

from typing import Annotated

import typer

from ledger.cli.options import BootstrapOption, DuckdbOption, TopicPrefixOption, build_settings
from ledger.errors import LedgerError

__all__ = ["sink"]


def sink(
    bootstrap_servers: BootstrapOption = None,
    topic_prefix: TopicPrefixOption = None,
    duckdb: DuckdbOption = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Records per committed batch at most.")
    ] = 5_000,
    batch_seconds: Annotated[
        float, typer.Option("--batch-seconds", min=0.01, help="Commit a batch this old.")
    ] = 1.0,
    compact_every: Annotated[
        float,
        typer.Option("--compact-every", min=0, help="Seconds between compactions (0: never)."),
    ] = 15.0,
    until_idle: Annotated[
        float | None,
        typer.Option(
            "--until-idle",
            min=0,
            help="Exit after being caught up for this many seconds (demos, tests).",
            show_default=False,
        ),
    ] = None,
    no_fsync: Annotated[
        bool, typer.Option("--no-fsync", help="Skip fsync (faster; a power cut may lose data).")
    ] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress, warnings only.")
    ] = False,
) -> None:
    """Consume every ledger topic into the ledger until SIGTERM or Ctrl-C.

    Offsets live in the ledger's segment names, not in Kafka: a restart (or a crash) resumes
    exactly after the last committed batch. Readers (sql, reports) work meanwhile.
    """
    from streams.sink import SinkOptions, run_sink

    settings = build_settings(bootstrap_servers, topic_prefix, duckdb)
    options = SinkOptions(
        batch_size=batch_size,
        batch_seconds=batch_seconds,
        compact_every_s=compact_every,
        until_idle_s=until_idle,
        fsync=not no_fsync,
    )
    try:
        run_sink(settings, options, quiet=quiet)
    except LedgerError as exc:
        typer.secho(f"Error: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(code=1) from None
