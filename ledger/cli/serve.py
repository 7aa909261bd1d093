"""``migration-ledger serve``: the flag service for routers in any language (OFREP) over HTTP.

One process: a flag client tailing the flag log, a journaled publisher for the decisions it
hands out, and an aiohttp server (``producers.ofrep_server``). Binds 127.0.0.1 unless told
otherwise; beyond loopback it refuses to start without ``MIGRATION_LEDGER_SERVE_TOKEN``, and
with a token set every request must carry ``Authorization: Bearer <token>``.

Exit codes: 1 when the broker cannot be reached, 2 for a refused bind (no token).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from ledger.cli.options import (
    FLAG_LOG_NOT_READ,
    FLAG_LOG_WAIT_S,
    BootstrapOption,
    TopicPrefixOption,
    build_settings,
    fail,
)
from ledger.errors import LedgerError
from ledger.kafka.admin import ensure_topics

__all__ = ["serve"]

DEFAULT_PORT = 8016


def serve(
    host: Annotated[
        str, typer.Option("--host", help="Address to bind (beyond loopback needs a token).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port to bind.")] = (
        DEFAULT_PORT
    ),
    journal: Annotated[
        Path | None,
        typer.Option("--journal", help="Publisher journal [default: in the cache folder]"),
    ] = None,
    stale_after: Annotated[
        float,
        typer.Option(
            "--stale-after", min=0.1, help="Seconds without reaching the log's end: STALE."
        ),
    ] = 30.0,
    bootstrap_servers: BootstrapOption = None,
    topic_prefix: TopicPrefixOption = None,
) -> None:
    """Serve OFREP flag evaluations (migration-pool, migration-shadow), each one recorded."""
    # Deferred: aiohttp and kafka-python load only when the server runs, not for --help.
    from aiohttp import web

    from producers.flag_client import FlagClient
    from producers.ofrep_server import OfrepService, bind_refusal, make_app
    from producers.publisher import Publisher

    settings = build_settings(bootstrap_servers, topic_prefix)
    token = settings.serve_token.get_secret_value() if settings.serve_token else None
    refusal = bind_refusal(host, token)
    if refusal:
        raise fail(refusal, code=2)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        ensure_topics(settings, connect_timeout_s=5.0)
    except LedgerError as exc:
        raise fail(exc) from exc
    journal_path = journal or (
        settings.cache_dir / "journal" / f"serve-{settings.topic_prefix or 'default'}.jsonl"
    )
    client = FlagClient(settings).start()
    if not client.wait_until_current(timeout=FLAG_LOG_WAIT_S):
        typer.echo(FLAG_LOG_NOT_READ, err=True)
    publisher = Publisher(settings, journal_path=journal_path).start()
    service = OfrepService(client, publisher, stale_after=stale_after)
    typer.echo(
        f"OFREP on http://{host}:{port}/ofrep/v1 for flag {settings.flag} "
        f"(version {client.version}); token {'required' if token else 'not required'}"
    )
    try:
        web.run_app(
            make_app(service, token=token),
            host=host,
            port=port,
            print=None,
            access_log=None,
            handle_signals=True,
        )
    finally:
        stats = publisher.close(timeout=10)
        client.close()
        typer.echo(
            f"served {service.evaluations} recorded evaluations, "
            f"{service.not_modified} not modified; {stats.pending} decisions left in "
            f"{journal_path}"
        )
