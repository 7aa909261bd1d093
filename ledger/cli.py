"""The ``migration-ledger`` command line: the composition root.

Each area is a typer sub-app defined beside the code it drives and wired in here; this is the
only module that knows them all. Settings are built once here, from the environment and the
common ``--bootstrap-servers`` / ``--topic-prefix`` / ``--duckdb`` flags.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ledger.settings import Settings

app = typer.Typer(
    name="migration-ledger",
    help="Event-sourced ledger for moving live traffic from pool V1 to pool V2 safely.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

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


# --- sub-commands: each area registers itself here (one or two lines each) ---------------
from ledger.kafka_cli import app as kafka_app  # noqa: E402

app.add_typer(kafka_app, name="kafka")

from streams.worker_cli import topics_app, worker  # noqa: E402

app.command("worker")(worker)
app.add_typer(topics_app, name="topics")
from streams.flags_cli import flags_app  # noqa: E402

app.add_typer(flags_app, name="flags")

from ledger.rules_cli import app as rules_app  # noqa: E402

app.add_typer(rules_app, name="rules")

from streams.check_cli import check  # noqa: E402

app.command("check")(check)

from ledger.switchover_cli import app as switchover_app  # noqa: E402
from ledger.switchover_cli import rollback  # noqa: E402

app.add_typer(switchover_app, name="switchover")
app.command("rollback")(rollback)

from ledger.store_cli import compact, export, ingest, sql  # noqa: E402
from streams.sink_cli import sink  # noqa: E402

for _command in (sink, sql, export, ingest, compact):
    app.command(_command.__name__)(_command)

from producers.simulate_cli import simulate  # noqa: E402

app.command("simulate")(simulate)

from reports.cli import audit, reclassify, replay, report  # noqa: E402

for _reader in (report, replay, audit, reclassify):
    app.command(_reader.__name__)(_reader)

from ledger.schema_cli import schema  # noqa: E402

app.command("schema")(schema)

from ledger.demo_cli import demo  # noqa: E402

app.command("demo")(demo)

# --- end of sub-commands ---------------------------------------------------------------------


def main() -> None:
    app()
