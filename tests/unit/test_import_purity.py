"""``import ledger`` must stay light: the pure domain loads no client library and no sibling.

Checked in a fresh interpreter, because this test process has long since imported everything.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import pytest

import ledger

#: Adapters' libraries and the sibling packages that the pure domain must never pull in.
FORBIDDEN_FOR_LEDGER = ("kafka", "aiokafka", "faust", "duckdb", "producers", "streams", "reports")
#: What `migration-ledger --help` must not pay for: sub-apps import these inside commands.
HEAVY_LIBRARIES = ("kafka", "aiokafka", "faust", "duckdb", "scipy", "pyarrow")


#: Adapters may import their library at top level; everything else in ledger/ is pure or CLI.
ADAPTERS = {"ledger.store", "ledger.kafka.broker"}
MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(ledger.__path__, prefix="ledger.")
    if info.name not in ADAPTERS and not info.name.startswith("ledger.store.")
)
PURE_MODULES = [
    name
    for name in MODULES
    if name not in {"ledger.cli.app", "ledger.__main__"} and not name.endswith("_cli")
]
CLI_MODULES = [name for name in MODULES if name not in PURE_MODULES]


def _top_level_modules_after(statement: str) -> set[str]:
    probe = f"import json, sys; {statement}; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    return {name.split(".")[0] for name in json.loads(done.stdout)}


def test_importing_ledger_loads_no_kafka_faust_duckdb_or_sibling_package() -> None:
    loaded = _top_level_modules_after("import ledger")
    assert loaded.isdisjoint(FORBIDDEN_FOR_LEDGER), sorted(loaded & set(FORBIDDEN_FOR_LEDGER))


def _culprits(modules: list[str], forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    """Which of ``modules``, each imported alone, loads something in ``forbidden``."""
    found = {m: sorted(_top_level_modules_after(f"import {m}") & set(forbidden)) for m in modules}
    return {module: libraries for module, libraries in found.items() if libraries}


def test_pure_domain_modules_load_no_adapter_library_nor_sibling() -> None:
    # One interpreter imports them all (a module each would cost a second apiece); only when
    # that fails is each imported alone, to name the culprits.
    loaded = _top_level_modules_after("import " + ", ".join(PURE_MODULES))
    if not loaded.isdisjoint(FORBIDDEN_FOR_LEDGER):
        pytest.fail(f"pure modules load adapters: {_culprits(PURE_MODULES, FORBIDDEN_FOR_LEDGER)}")


def test_the_broker_manager_needs_no_kafka_client_library() -> None:
    loaded = _top_level_modules_after("import ledger.kafka.broker")
    assert loaded.isdisjoint(HEAVY_LIBRARIES), sorted(loaded & set(HEAVY_LIBRARIES))


def test_cli_modules_defer_heavy_libraries_to_the_commands_that_use_them() -> None:
    loaded = _top_level_modules_after("import " + ", ".join(CLI_MODULES))
    if not loaded.isdisjoint(HEAVY_LIBRARIES):
        pytest.fail(f"CLI modules load heavy libraries: {_culprits(CLI_MODULES, HEAVY_LIBRARIES)}")
