"""The runbooks stay true to the code: every command they show exists with the options they
use, and every ``migration-ledger sql`` query they show binds against the ledger's schema.

Commands the runbooks describe before they are built are listed in ``NOT_BUILT_YET`` and
skipped; as soon as one is registered in the CLI its invocations are checked like the others,
whether or not the list is updated.
"""

from __future__ import annotations

import functools
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer.main

from ledger.cli.app import app

RUNBOOKS = Path(__file__).resolve().parents[2] / "docs" / "runbooks"
#: Top-level commands the runbooks use that other issues are still building.
NOT_BUILT_YET: frozenset[str] = frozenset()
_SHELL_OPERATORS = {"|", "||", "&&", ";", ">", ">>", "<", ")", "&"}
_BLOCK = re.compile(r"```sh\n(.*?)```", re.DOTALL)


@dataclass(frozen=True)
class Invocation:
    page: str
    tokens: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.page}: migration-ledger {' '.join(self.tokens)}"


def _logical_lines(block: str) -> list[str]:
    """Split a shell block into commands: a newline inside quotes does not end one."""
    lines: list[str] = []
    current: list[str] = []
    quote: str | None = None
    for char in block:
        if quote is None and char in "\"'":
            quote = char
        elif quote == char:
            quote = None
        if char == "\n" and quote is None:
            lines.append("".join(current))
            current = []
        else:
            current.append(char)
    lines.append("".join(current))
    return [line for line in lines if line.strip()]


def invocations() -> list[Invocation]:
    found: list[Invocation] = []
    for page in sorted(RUNBOOKS.glob("*.md")):
        for block in _BLOCK.findall(page.read_text()):
            for line in _logical_lines(block):
                tokens = shlex.split(line, comments=True)
                while "migration-ledger" in tokens:
                    start = tokens.index("migration-ledger") + 1
                    rest = tokens[start:]
                    end = next((i for i, t in enumerate(rest) if t in _SHELL_OPERATORS), len(rest))
                    found.append(Invocation(page.name, tuple(rest[:end])))
                    tokens = rest[end:]
    return found


def _resolve(tokens: tuple[str, ...]) -> tuple[Any, list[str]]:
    """The click command the tokens name (None if a name is unknown) and the path to it."""
    # typer vendors its own click, so groups are recognised by their ``commands``.
    command: Any = _cli()
    path: list[str] = []
    for token in tokens:
        if not hasattr(command, "commands") or token.startswith("-"):
            break
        sub = command.commands.get(token)
        if sub is None:
            return None, [*path, token]
        command = sub
        path.append(token)
    return command, path


@functools.cache
def _cli() -> Any:
    """The click command tree, built once (typer rebuilds it on every call)."""
    return typer.main.get_command(app)


def _top_level() -> set[str]:
    return set(_cli().commands)


ALL = invocations()
BUILT = [i for i in ALL if i.tokens and i.tokens[0] in _top_level()]


def test_runbooks_show_commands_at_all() -> None:
    assert len(ALL) > 40
    assert {"kafka", "topics", "worker", "check", "switchover", "rollback"} <= {
        i.tokens[0] for i in BUILT
    }


@pytest.mark.parametrize("invocation", BUILT, ids=str)
def test_every_built_command_a_runbook_shows_exists_with_its_options(
    invocation: Invocation,
) -> None:
    command, path = _resolve(invocation.tokens)
    assert command is not None, f"no such command: migration-ledger {' '.join(path)}"
    known = {opt for param in command.params for opt in param.opts + param.secondary_opts}
    used = {t.split("=")[0] for t in invocation.tokens[len(path) :] if t.startswith("--")}
    assert used <= known, f"unknown option(s) {sorted(used - known)} for {' '.join(path)}"


def test_every_command_a_runbook_shows_is_built_or_known_to_be_coming() -> None:
    unknown = {i.tokens[0] for i in ALL if i.tokens} - _top_level() - NOT_BUILT_YET
    assert not unknown, f"runbooks use commands nobody builds: {sorted(unknown)}"


def _queries() -> list[tuple[str, str]]:
    queries = []
    for invocation in ALL:
        if invocation.tokens[:1] == ("sql",):
            positional = [t for t in invocation.tokens[1:] if not t.startswith("-")]
            queries.append((invocation.page, positional[0]))
    return queries


@pytest.mark.parametrize(("page", "query"), _queries(), ids=lambda v: v[:60])
def test_every_sql_query_a_runbook_shows_binds_against_the_ledger_schema(
    page: str, query: str
) -> None:
    duckdb = pytest.importorskip("duckdb")
    schema = pytest.importorskip("ledger.store.schema")
    db = duckdb.connect()
    for table in schema.TABLES.values():
        columns = ", ".join(f'"{c.name}" {c.type}' for c in table.columns)
        db.execute(f"CREATE TABLE {table.name} ({columns})")
    for name, body in schema.VIEWS.items():
        db.execute(f"CREATE VIEW {name} AS {body}")
    db.execute(query).fetchall()  # binds every name and type; the tables are empty
