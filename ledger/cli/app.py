"""The ``migration-ledger`` command line: the composition root.

Each command group lives in its own module of ``ledger.cli`` and is wired in here; this is the
only module that knows them all. Settings are built in each command from the environment and
the common ``--bootstrap-servers`` / ``--topic-prefix`` / ``--duckdb`` flags
(``ledger.cli.options``). Command modules keep their heavy imports (faust, DuckDB, Kafka
clients) inside the commands, so ``migration-ledger --help`` starts fast.
"""

from __future__ import annotations

import typer

from ledger.cli import (
    check,
    config,
    demo,
    flags,
    kafka,
    merkle,
    reports,
    rules,
    schema,
    serve,
    simulate,
    sink,
    store,
    switchover,
    worker,
)

__all__ = ["app", "main"]

app = typer.Typer(
    name="migration-ledger",
    help="Event-sourced ledger for moving live traffic from pool V1 to pool V2 safely.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

# Running the system: the broker, the topics, the worker, the sink, simulated traffic.
app.add_typer(kafka.app, name="kafka")
app.add_typer(worker.topics_app, name="topics")
app.command("worker")(worker.worker)
app.command("sink")(sink.sink)
app.command("simulate")(simulate.simulate)
app.command("demo")(demo.demo)
app.command("check")(check.check)
app.add_typer(config.app, name="config")
# Serving routers in any language: OFREP over HTTP.
app.command("serve")(serve.serve)

# Steering the migration: flags, the switchover controller, rollback.
app.add_typer(flags.flags_app, name="flags")
app.add_typer(switchover.app, name="switchover")
app.command("rollback")(switchover.rollback)
# One rollback, two names: `flags rollback` is where an operator looking at the flag expects it.
flags.flags_app.command("rollback", help="Alias of `migration-ledger rollback`.")(
    switchover.rollback
)

# Reading the ledger: queries, reports, replay, audit; moving and compacting it.
for _command in (store.sql, store.export, store.ingest, store.compact, store.archive):
    app.command(_command.__name__)(_command)
for _reader in (reports.report, reports.replay, reports.audit, reports.reclassify):
    app.command(_reader.__name__)(_reader)

# Tamper evidence: checkpoints kept outside the ledger, proofs checked offline, keys.
app.command("checkpoint")(merkle.checkpoint)
app.command("proof")(merkle.proof)
app.command("verify-proof")(merkle.verify_proof)
app.add_typer(merkle.keys_app, name="keys")

# The contracts: comparison rules and the events' JSON Schemas.
app.add_typer(rules.app, name="rules")
app.command("schema")(schema.schema)


def main() -> None:
    app()
