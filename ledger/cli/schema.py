"""``migration-ledger schema``: write (or check) the event contract's JSON Schemas."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ledger.schemas import stale_schemas, write_schemas

__all__ = ["schema"]


def schema(
    out: Annotated[
        Path, typer.Option("--out", help="Folder to write <EventType>.json files into.")
    ] = Path("docs/schemas"),
    check: Annotated[
        bool,
        typer.Option(
            "--check", help="Write nothing; exit 1 if the folder differs from the models."
        ),
    ] = False,
) -> None:
    """Write one JSON Schema per event type (and FlagCommand.json) from the models."""

    if check:
        stale = stale_schemas(out)
        if stale:
            typer.echo(
                f"error: schemas out of date in {out}: {', '.join(stale)}; "
                "run `migration-ledger schema` and commit the result",
                err=True,
            )
            raise typer.Exit(1)
        typer.echo(f"ok: the schemas in {out} match the models")
        return
    if out.exists() and not out.is_dir():
        typer.echo(f"error: {out} is not a folder", err=True)
        raise typer.Exit(2)
    try:
        written = write_schemas(out)
    except OSError as exc:
        typer.echo(f"error: cannot write schemas into {out}: {exc.strerror or exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"wrote {len(written)} schemas into {out}")
