"""``migration-ledger rules``: check a comparison-rules file, print the default, try a pair.

Writing rules is trial and error; these commands make each trial take a second and name the
line of every mistake, without a broker or a worker.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from ledger.comparison import compare_operations, load_rules
from ledger.errors import EventDecodeError, RulesError
from ledger.events import OperationRecorded, decode_event_object

__all__ = ["app"]

app = typer.Typer(help="Comparison rules: check a file, print the default, compare a pair.")

RulesOption = Annotated[
    Path | None, typer.Option("--rules", help="Rules file (default: the packaged rules).")
]


@app.command("check")
def check(path: Annotated[Path, typer.Argument(help="The rules file to check.")]) -> None:
    """Validate a rules file; on a problem, print its line and exit 1."""

    try:
        rules = load_rules(path)
    except RulesError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"ok: {path} (version {rules.version}, sha256 {rules.digest[:12]})")


@app.command("default")
def default() -> None:
    """Print the packaged default rules (a starting point to copy and edit)."""
    from importlib import resources

    text = resources.files("ledger.comparison").joinpath("default_rules.toml").read_text("utf-8")
    typer.echo(text, nl=False)


@app.command("compare")
def compare(
    v1_file: Annotated[Path, typer.Argument(help="V1's answer: a result or an event (JSON).")],
    v2_file: Annotated[Path, typer.Argument(help="V2's answer: a result or an event (JSON).")],
    rules_path: RulesOption = None,
    operation: Annotated[
        str, typer.Option(help="Operation name, for per-operation rules.")
    ] = "execute_program",
) -> None:
    """Compare two answers under the rules and print the comparison as JSON.

    Each file holds either a whole OperationRecorded event or just a result; a bare result is
    taken as a successful execution of ``--operation``.
    """

    try:
        rules = load_rules(rules_path)
        v1 = _operation(v1_file, "v1", operation)
        v2 = _operation(v2_file, "v2", operation)
        comparison = compare_operations(v1, v2, rules, at=datetime.now(UTC))
    except (RulesError, EventDecodeError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(comparison.model_dump_json(indent=2))


def _operation(path: Path, pool: str, operation: str) -> Any:
    """The OperationRecorded in ``path``, or a successful one wrapping the result in it."""

    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EventDecodeError(f"{path}: cannot read JSON: {exc}") from exc
    if isinstance(document, dict) and document.get("type") == "OperationRecorded":
        return decode_event_object(document, expected=OperationRecorded)
    return OperationRecorded(
        event_id=f"{path.name}-{pool}",
        correlation_id="rules-compare",
        session_id=None,
        pool=pool,  # type: ignore[arg-type]
        role="primary" if pool == "v1" else "shadow",
        operation=operation,
        outcome="ok",
        result=document,
        started_at=datetime.now(UTC),
        duration_ms=0.0,
    )
