"""Which package may import what, and which may do I/O: read from the source (AST).

Every import counts, at the top of a module or inside a function, so a late import cannot
hide a dependency. The rule, as docs/architecture.md draws it:

- the pure core (``ledger/*.py``, ``ledger/comparison/``) imports no adapter, no sibling
  package, no client library, and reads no clock, file or socket (time is passed in);
- ``ledger/store/`` (DuckDB) and ``ledger/kafka/`` (Kafka) import the core and their library,
  never each other, the CLI or a sibling;
- ``streams/``, ``producers/`` and ``reports/`` import ``ledger`` and never each other;
- ``ledger/cli/`` is the composition root: the only importer of the sibling packages.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("ledger", "streams", "producers", "reports")

#: Client and storage libraries: only adapters may import them.
ADAPTER_LIBRARIES = {"kafka", "aiokafka", "faust", "mode", "duckdb", "pyarrow"}
#: Presentation libraries: the CLI and the reports' renderings, not the core.
PRESENTATION_LIBRARIES = {"typer", "rich"}
#: Standard modules that do I/O or read the clock: never in the core.
IO_MODULES = {"socket", "subprocess", "urllib", "http", "shutil", "signal", "fcntl", "asyncio"}
#: Calls that read the clock.
CLOCK_CALLS = {"now", "utcnow", "today", "time", "monotonic", "perf_counter", "time_ns"}

#: Core modules allowed one kind of I/O, each for a reason.
CORE_IO_EXCEPTIONS = {
    # Settings are read from the environment: that is what pydantic-settings is for.
    "ledger/settings.py",
    # `schema --check` compares and writes docs/schemas; the CLI calls it.
    "ledger/schemas.py",
    # Each reads the one TOML file a user names (load_rules, load_policy, load_plan) and hands
    # the text to a pure parser; tests call the parsers on strings.
    "ledger/comparison/rules.py",
    "ledger/policy.py",
    "ledger/switchover.py",
    # load_profiles: the environment profiles file (the settings' profile source calls it).
    "ledger/profiles.py",
}


@dataclass(frozen=True)
class Import:
    path: str
    line: int
    module: str


def _layer(path: str) -> str:
    parts = path.split("/")
    if parts[0] != "ledger":
        return parts[0]
    if len(parts) > 2 and parts[1] in ("store", "kafka", "cli"):
        return f"ledger.{parts[1]}"
    if parts[-1] == "__main__.py":
        return "ledger.cli"
    return "core"


def _sources() -> Iterator[Path]:
    for package in PACKAGES:
        yield from sorted((ROOT / package).rglob("*.py"))


def _imports(path: Path) -> Iterator[Import]:
    tree = ast.parse(path.read_text("utf-8"), filename=str(path))
    rel = path.relative_to(ROOT).as_posix()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(rel, node.lineno, alias.name)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield Import(rel, node.lineno, node.module)
            if node.module == "ledger":  # `from ledger import store` names a sub-package
                for alias in node.names:
                    yield Import(rel, node.lineno, f"ledger.{alias.name}")


def _target(module: str) -> str:
    """The layer (or library) an imported module belongs to."""
    top = module.split(".")[0]
    if top == "ledger":
        parts = module.split(".")
        if len(parts) > 1 and parts[1] in ("store", "kafka", "cli"):
            return f"ledger.{parts[1]}"
        return "core"
    return top


ALLOWED: dict[str, set[str]] = {
    "core": {"core"},
    "ledger.store": {"core", "ledger.store"},
    "ledger.kafka": {"core", "ledger.kafka"},
    "ledger.cli": {"core", "ledger.store", "ledger.kafka", "ledger.cli", *PACKAGES[1:]},
    "streams": {"core", "ledger.store", "ledger.kafka", "streams"},
    "producers": {"core", "ledger.kafka", "producers"},
    "reports": {"core", "ledger.store", "reports"},
}
PROJECT = {"core", "ledger.store", "ledger.kafka", "ledger.cli", *PACKAGES[1:]}

ALL_IMPORTS = [imp for path in _sources() for imp in _imports(path)]


def test_the_source_tree_is_read() -> None:
    layers = {_layer(imp.path) for imp in ALL_IMPORTS}
    assert layers == set(ALLOWED), layers  # every layer is seen, so no rule is vacuous


def test_each_layer_imports_only_the_layers_beneath_it() -> None:
    wrong = [
        f"{imp.path}:{imp.line} ({_layer(imp.path)}) imports {imp.module}"
        for imp in ALL_IMPORTS
        if _target(imp.module) in PROJECT and _target(imp.module) not in ALLOWED[_layer(imp.path)]
    ]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize(
    ("layer", "forbidden"),
    [
        ("core", ADAPTER_LIBRARIES | PRESENTATION_LIBRARIES),
        ("ledger.store", {"kafka", "aiokafka", "faust", "mode"}),
        ("ledger.kafka", {"duckdb", "pyarrow", "faust", "mode"}),
        ("producers", {"faust", "mode", "duckdb"}),
        ("reports", {"kafka", "aiokafka", "faust", "mode"}),
    ],
)
def test_libraries_stay_in_their_adapters(layer: str, forbidden: set[str]) -> None:
    wrong = [
        f"{imp.path}:{imp.line} imports {imp.module}"
        for imp in ALL_IMPORTS
        if _layer(imp.path) == layer and _target(imp.module) in forbidden
    ]
    assert not wrong, "\n".join(wrong)


def _core_sources() -> list[Path]:
    return [p for p in _sources() if _layer(p.relative_to(ROOT).as_posix()) == "core"]


def test_the_core_does_no_io_and_reads_no_clock() -> None:
    wrong: list[str] = []
    for path in _core_sources():
        rel = path.relative_to(ROOT).as_posix()
        if rel in CORE_IO_EXCEPTIONS:
            continue
        tree = ast.parse(path.read_text("utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                if isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                for name in names:
                    if name.split(".")[0] in IO_MODULES:
                        wrong.append(f"{rel}:{node.lineno} imports {name}")
            elif isinstance(node, ast.Call):
                func = node.func
                if isinstance(func, ast.Name) and func.id == "open":
                    wrong.append(f"{rel}:{node.lineno} calls open()")
                if isinstance(func, ast.Attribute) and func.attr in CLOCK_CALLS:
                    owner = func.value
                    owner_name = owner.id if isinstance(owner, ast.Name) else ""
                    if owner_name in {"datetime", "time", "date"}:
                        wrong.append(
                            f"{rel}:{node.lineno} reads the clock ({owner_name}.{func.attr})"
                        )
                if isinstance(func, ast.Attribute) and func.attr in {
                    "read_text",
                    "write_text",
                    "read_bytes",
                    "write_bytes",
                }:
                    wrong.append(f"{rel}:{node.lineno} does file I/O (.{func.attr})")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize(
    ("path", "module", "allowed"),
    [
        ("ledger/rollout.py", "ledger.store", False),
        ("ledger/rollout.py", "ledger.events", True),
        ("ledger/store/writer.py", "ledger.kafka.log", False),
        ("streams/pairing.py", "producers.shadow", False),
        ("producers/shadow.py", "ledger.kafka.log", True),
        ("reports/audit.py", "ledger.cli.options", False),
        ("ledger/cli/app.py", "streams.app", True),
    ],
)
def test_the_rule_tells_allowed_from_forbidden(path: str, module: str, allowed: bool) -> None:
    """The rule can fail: a few imports it must refuse or let through."""
    assert (_target(module) in ALLOWED[_layer(path)]) is allowed
