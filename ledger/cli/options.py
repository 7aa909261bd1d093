"""What every command group shares: the common flags, settings built from them, error exits.

Command modules import these names from here, never from ``ledger.cli.app``: the composition
root imports every command module, so importing back from it would be circular.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ledger.settings import Settings

__all__ = [
    "ArchiveOption",
    "BootstrapOption",
    "DuckdbOption",
    "TopicPrefixOption",
    "build_settings",
    "fail",
]

BootstrapOption = Annotated[
    str | None,
    typer.Option(
        "--bootstrap-servers",
        help="Kafka bootstrap servers [env MIGRATION_LEDGER_BOOTSTRAP_SERVERS]",
    ),
]
TopicPrefixOption = Annotated[
    str | None,
    typer.Option(
        "--topic-prefix",
        help="Prefix put before every topic name [env MIGRATION_LEDGER_TOPIC_PREFIX]",
    ),
]
DuckdbOption = Annotated[
    Path | None,
    typer.Option("--duckdb", help="Location of the DuckDB ledger [env MIGRATION_LEDGER_DUCKDB]"),
]

ArchiveOption = Annotated[
    Path | None,
    typer.Option(
        "--archive", help="Also read this archive (`migration-ledger archive --out DIR`)."
    ),
]


def build_settings(
    bootstrap_servers: str | None = None,
    topic_prefix: str | None = None,
    duckdb: Path | None = None,
    **other: Any,
) -> Settings:
    """Settings from the environment, overridden by whichever flags were given."""
    given: dict[str, Any] = {
        "bootstrap_servers": bootstrap_servers,
        "topic_prefix": topic_prefix,
        "duckdb": duckdb,
        **other,
    }
    return Settings(**{k: v for k, v in given.items() if v is not None})


def fail(message: object, code: int = 1) -> typer.Exit:
    """Print ``Error: message`` in red on stderr; ``raise fail(...)`` exits with ``code``.

    Exit codes: 1 for a refused or failed operation, 2 for input that cannot be read (a corrupt
    ledger, a bad file). Each command group documents which it uses.
    """
    typer.secho(f"Error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code=code)


#: How long a router (simulate, serve, demo) waits to read the flag log before deciding.
FLAG_LOG_WAIT_S = 15.0
FLAG_LOG_NOT_READ = (
    "warning: the flag log was not read within "
    f"{FLAG_LOG_WAIT_S:g} s; deciding on the defaults (V1) until it is"
)
