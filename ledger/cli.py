"""The ``migration-ledger`` command line: the composition root.

Each area is a typer sub-app defined beside the code it drives and wired in here; this is the
only module that knows them all. Settings are built once here, from the environment and the
common ``--bootstrap-servers`` / ``--topic-prefix`` / ``--duckdb`` flags.
"""

from __future__ import annotations

import typer

from ledger.cli_options import BootstrapOption, DuckdbOption, TopicPrefixOption, build_settings

__all__ = [
    "BootstrapOption",
    "DuckdbOption",
    "TopicPrefixOption",
    "app",
    "build_settings",
    "main",
]

app = typer.Typer(
    name="migration-ledger",
    help="Event-sourced ledger for moving live traffic from pool V1 to pool V2 safely.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

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

from ledger.merkle_cli import checkpoint, keys_app, proof, verify_proof  # noqa: E402

app.command("checkpoint")(checkpoint)
app.command("proof")(proof)
app.command("verify-proof")(verify_proof)
app.add_typer(keys_app, name="keys")

from ledger.demo_cli import demo  # noqa: E402

app.command("demo")(demo)

# --- end of sub-commands ---------------------------------------------------------------------


def main() -> None:
    app()
