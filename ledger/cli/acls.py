"""``migration-ledger acls plan | apply``: the broker's ACLs as code (``ledger.acls``).

``plan`` needs no broker: it prints what each principal may do with these settings' topic
names. ``apply`` connects with the current settings (the ``admin`` principal: source
``credentials/admin.env`` of ``kafka up --secure``), creates what is missing and, with
``--prune``, deletes what a planned principal has beyond its plan. Exit 1 when Kafka refuses.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from ledger.acls import render_plan
from ledger.cli.options import BootstrapOption, TopicPrefixOption, build_settings, fail
from ledger.errors import LedgerError
from ledger.kafka.acls import apply_acls, planned_acls
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
