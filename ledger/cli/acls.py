"""``migration-ledger acls plan | apply``: the broker's ACLs as code (``ledger.acls``).

``plan`` needs no broker: it prints what each principal may do with these settings' topic
names. ``apply`` connects with the current settings (the ``admin`` principal: source
``credentials/admin.env`` of ``kafka up --secure``), creates what is missing and, with
``--prune``, deletes what a planned principal has beyond its plan. ``set-password`` gives a
principal a new SCRAM password (generated, never printed) and writes it into its env file.
Exit 1 when Kafka refuses.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from pathlib import Path
from typing import Annotated

import typer

from ledger.acls import render_plan
from ledger.cli.options import BootstrapOption, TopicPrefixOption, build_settings, fail
from ledger.errors import LedgerError
from ledger.kafka.acls import apply_acls, planned_acls, set_scram_password
from ledger.kafka.clients import admin_client

app = typer.Typer(
    name="acls",
    help="Least-privilege Kafka ACLs per principal: print the plan, apply it as admin.",
    no_args_is_help=True,
)


@app.command()
def plan(
    topic_prefix: TopicPrefixOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per ACL.")] = False,
) -> None:
    """Print the ACLs each principal gets (router, worker, sink, operator; admin is super)."""
    acls = planned_acls(build_settings(topic_prefix=topic_prefix))
    if as_json:
        for acl in acls:
            typer.echo(
                json.dumps(
                    {
                        "principal": f"User:{acl.principal}",
                        "resource_type": acl.resource_type.value,
                        "pattern_type": acl.pattern_type.value,
                        "resource_name": acl.resource_name,
                        "operation": acl.operation.value,
                        "permission": "ALLOW",
                    }
                )
            )
        return
    typer.echo(render_plan(acls))


@app.command()
def apply(
    bootstrap_servers: BootstrapOption = None,
    topic_prefix: TopicPrefixOption = None,
    prune: Annotated[
        bool,
        typer.Option("--prune", help="Also delete ACLs a planned principal has beyond its plan."),
    ] = False,
) -> None:
    """Make the broker's ACLs match the plan (idempotent; run as the admin principal)."""
    settings = build_settings(bootstrap_servers=bootstrap_servers, topic_prefix=topic_prefix)
    acls = planned_acls(settings)
    try:
        admin = admin_client(settings, request_timeout_ms=10_000)
        try:
            applied = apply_acls(admin, acls, prune=prune)
        finally:
            admin.close()
    except LedgerError as error:
        raise fail(error) from None
    for acl in applied.created:
        typer.echo(f"created  {acl}")
    for acl in applied.deleted:
        typer.echo(f"deleted  {acl}")
    typer.echo(
        f"ACLs at {settings.bootstrap_servers}: {len(applied.created)} created, "
        f"{len(applied.deleted)} deleted, {applied.unchanged} already in place."
    )


@app.command("set-password")
def set_password(
    principal: Annotated[str, typer.Argument(help="The user, e.g. worker or router-eu-1.")],
    env_file: Annotated[
        Path,
        typer.Option(
            "--env-file",
            help="The principal's env file to update (its MIGRATION_LEDGER_SASL_PASSWORD "
            "line, created if absent); written 0600.",
            dir_okay=False,
        ),
    ],
    bootstrap_servers: BootstrapOption = None,
    mechanism: Annotated[
        str, typer.Option("--mechanism", help="SCRAM-SHA-512 or SCRAM-SHA-256.")
    ] = "SCRAM-SHA-512",
) -> None:
    """Create or replace a principal's SCRAM password (run as admin); the password is
    generated and goes only into --env-file, never to the screen."""
    settings = build_settings(bootstrap_servers=bootstrap_servers)
    password = secrets.token_urlsafe(24)
    try:
        admin = admin_client(settings, request_timeout_ms=10_000)
        try:
            set_scram_password(admin, principal, password, mechanism)
        finally:
            admin.close()
    except LedgerError as error:
        raise fail(error) from None
    _write_password(env_file, principal, password)
    typer.echo(
        f"{principal}: new {mechanism} password set at {settings.bootstrap_servers} and "
        f"written to {env_file}. Restart {principal}'s processes with it; connections "
        "already open keep working until they reconnect."
    )


def _write_password(env_file: Path, principal: str, password: str) -> None:
    """Replace (or add) the password line of an env file, and the store of a local broker."""
    line = f"MIGRATION_LEDGER_SASL_PASSWORD={password}"
    text = (
        env_file.read_text()
        if env_file.exists()
        else f"MIGRATION_LEDGER_SASL_USERNAME={principal}\n"
    )
    pattern = re.compile(r"^MIGRATION_LEDGER_SASL_PASSWORD=.*$", re.MULTILINE)
    text = pattern.sub(line, text) if pattern.search(text) else text + line + "\n"
    _write_private(env_file, text)
    store = env_file.parent / "passwords.json"  # `kafka up --secure` keeps one there
    if store.exists():
        passwords = json.loads(store.read_text())
        passwords[principal] = password
        _write_private(store, json.dumps(passwords, indent=2) + "\n")


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    tmp.replace(path)
