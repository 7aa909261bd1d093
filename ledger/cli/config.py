"""``migration-ledger config diff A B``: what differs between two environment profiles.

Validation of one profile is ``migration-ledger check --env NAME`` (``--profile-only``
without a broker). Exit codes: 0 fine (differences are information), 2 a profile or the file
cannot be read or has problems.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from ledger.cli.options import fail
from ledger.errors import ConfigurationError
from ledger.profiles import Profile, check_profile, diff_profiles, load_profiles

__all__ = ["app", "diff", "profile_named"]

app = typer.Typer(help="Environment profiles ([env.dev], [env.staging], [env.prod]).")

ProfilesOption = Annotated[
    Path | None,
    typer.Option(
        "--profiles", help="The profiles file [env MIGRATION_LEDGER_PROFILES; environments.toml]"
    ),
]


def profiles_path(given: Path | None) -> Path:
    """``--profiles``, else MIGRATION_LEDGER_PROFILES, else environments.toml (as Settings)."""
    return given or Path(os.environ.get("MIGRATION_LEDGER_PROFILES", "environments.toml"))


def profile_named(path: Path, name: str) -> Profile:
    """The validated profile ``name`` of ``path``; exits 2 naming every problem."""
    try:
        tables = load_profiles(path)
    except ConfigurationError as exc:
        raise fail(str(exc), code=2) from None
    if name not in tables:
        raise fail(f"{path}: no profile [env.{name}] (profiles: {', '.join(sorted(tables))})", 2)
    checked = check_profile(name, tables[name])
    if checked.profile is None or not checked.ok:
        raise fail(f"{path}: profile {name}: " + "; ".join(checked.problems), code=2)
    return checked.profile


@app.command("diff")
def diff(
    first: Annotated[str, typer.Argument(help="An environment, e.g. staging.")],
    second: Annotated[str, typer.Argument(help="Another, e.g. prod.")],
    profiles: ProfilesOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """Every effective setting that differs between two profiles (defaults filled in)."""
    path = profiles_path(profiles)
    rows = diff_profiles(profile_named(path, first), profile_named(path, second))
    if as_json:
        typer.echo(json.dumps([{"key": k, first: a, second: b} for k, a, b in rows], indent=2))
        return
    if not rows:
        typer.echo(f"{first} and {second} are the same")
        return
    width = max(len(k) for k, _, _ in rows)
    typer.echo(f"{'key':<{width}}  {first} -> {second}")
    for key, a, b in rows:
        typer.echo(f"{key:<{width}}  {json.dumps(a)} -> {json.dumps(b)}")
