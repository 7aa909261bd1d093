"""``migration-ledger kafka up | down | status``: the local broker from the command line.

Each command addresses the broker on one client port, so several can run side by side.
Progress of the slow steps goes to stderr as a spinner; results go to stdout.
"""

from __future__ import annotations

import contextlib
import time
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from ledger.cli.options import fail
from ledger.errors import BrokerError
from ledger.kafka.broker import BrokerState, LocalBroker, new_cluster_id
from ledger.kafka.secure import PRINCIPALS, format_arguments, prepare_secure, secure_properties
from ledger.settings import Settings

app = typer.Typer(
    name="kafka",
    help="Run a local Apache Kafka broker (KRaft, single node, loopback only).",
    no_args_is_help=True,
)

PortOption = Annotated[
    int,
    typer.Option("--port", min=1, max=65535, help="Client (PLAINTEXT) port on 127.0.0.1."),
]
ControllerPortOption = Annotated[
    int | None,
    typer.Option(
        "--controller-port",
        min=1,
        max=65535,
        help="KRaft controller port on 127.0.0.1 [default: --port + 1, i.e. 9093]",
        show_default=False,
    ),
]


def _broker(port: int, controller_port: int | None = None, *, secure: bool = False) -> LocalBroker:
    return LocalBroker(
        Settings().cache_dir, port=port, controller_port=controller_port, secure=secure
    )


def _security_lines(state: BrokerState) -> str:
    """Which listener and principals exist (never a password: those are in the env files)."""
    if not state.principals:
        return f"\n  listener: {state.listener} (no authentication)"
    return (
        f"\n  listener: {state.listener} (SCRAM-SHA-512, StandardAuthorizer)"
        f"\n  principals: {', '.join(state.principals)}"
        f"\n  credentials: {state.credentials_dir}/<principal>.env (mode 0600)"
    )


def _spinner(message: str) -> AbstractContextManager[object]:
    """A spinner on a terminal; in logs (CI, make) one plain line, since nothing animates."""
    # Deferred: rich loads only when something is printed.
    from rich.console import Console

    console = Console(stderr=True)
    if not console.is_terminal:
        console.print(f"{message} ...", highlight=False)
        return contextlib.nullcontext()
    return console.status(message)


@app.command()
def up(
    port: PortOption = 9092,
    controller_port: ControllerPortOption = None,
    timeout: Annotated[
        float, typer.Option("--timeout", min=1, help="Seconds to wait for the broker to answer.")
    ] = 90.0,
    secure: Annotated[
        bool,
        typer.Option(
            "--secure",
            help="SASL_SSL listener (private CA, SCRAM-SHA-512 users admin, worker, sink, "
            "router, operator), ACLs enforced; env files per principal in the state folder.",
        ),
    ] = False,
) -> None:
    """Fetch the jars if needed, start the broker in the background and wait until it answers."""
    started_at = time.monotonic()
    try:
        broker = _broker(port, controller_port, secure=secure)
        state, started = broker.up(timeout=timeout, step=_spinner)
    except BrokerError as error:
        raise fail(error) from None
    if not started:
        typer.echo(f"Kafka is already up at {state.bootstrap} (pid {state.pid}); nothing to do.")
        return
    typer.echo(
        f"Kafka {state.kafka_version} is up at {state.bootstrap} (pid {state.pid}, controller "
        f"port {state.controller_port}) after {time.monotonic() - started_at:.1f} s.\n"
        f"  data: {state.data_dir}\n  logs: {state.log_dir}{_security_lines(state)}"
    )
    if state.principals:
        typer.echo(
            "  next: `migration-ledger acls apply` with the admin env file, e.g.\n"
            f"    set -a; . {state.credentials_dir}/admin.env; set +a; migration-ledger acls apply"
        )


@app.command()
def certs(
    directory: Annotated[
        Path, typer.Option("--dir", help="Where tls/, credentials/ and server.properties go.")
    ],
    host: Annotated[
        str, typer.Option("--host", help="The broker's advertised name (in its certificate).")
    ] = "kafka",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 9094,
    controller_port: Annotated[int, typer.Option("--controller-port", min=1, max=65535)] = 9095,
) -> None:
    """Write a secure broker's files for a broker run elsewhere (compose's secure profile):
    CA, certificate, env files, server.properties and the storage-format arguments."""
    files = prepare_secure(directory, host=host, bootstrap=f"{host}:{port}", now=datetime.now(UTC))
    properties = directory / "server.properties"
    text = secure_properties(
        files,
        host=host,
        port=port,
        controller_port=controller_port,
        data_dir=Path("/var/lib/kafka/data"),
        listen_host="0.0.0.0",  # inside its container; compose publishes it on loopback only
    )
    for path, content in (
        (properties, text),
        (files.credentials_dir / "format.args", " ".join(format_arguments(files)) + "\n"),
    ):
        path.touch(mode=0o600)
        path.chmod(0o600)
        path.write_text(content)
    cluster = directory / "cluster.id"
    if not cluster.exists():
        cluster.write_text(new_cluster_id() + "\n")
    typer.echo(
        f"Secure broker files for {host}:{port} in {directory} (principals: "
        f"{', '.join(PRINCIPALS)}; env files in {files.credentials_dir}, mode 0600)."
    )


@app.command()
def down(
    port: PortOption = 9092,
    timeout: Annotated[
        float, typer.Option("--timeout", min=1, help="Seconds to wait after SIGTERM (then KILL).")
    ] = 30.0,
) -> None:
    """Stop the broker on this port (SIGTERM, then wait); harmless when none runs."""
    try:
        stopped = _broker(port).down(timeout=timeout)
    except BrokerError as error:
        raise fail(error) from None
    if stopped is None:
        typer.echo(f"No Kafka broker of ours runs on port {port}; nothing to stop.")
    else:
        typer.echo(f"Kafka at {stopped.bootstrap} (pid {stopped.pid}) stopped.")


@app.command()
def status(port: PortOption = 9092) -> None:
    """Say whether the broker on this port is up, and where its data and logs are."""
    try:
        state = _broker(port).status()
    except BrokerError as error:
        raise fail(error) from None
    if state is None:
        typer.echo(f"down: no Kafka broker of ours runs on port {port}.")
        return
    typer.echo(
        f"up: Kafka {state.kafka_version} at {state.bootstrap} (pid {state.pid}, controller "
        f"port {state.controller_port})\n  data: {state.data_dir}\n  logs: {state.log_dir}"
        f"{_security_lines(state)}"
    )
