"""One small ledger (written through the real writer) shared by the report tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from report_factories import Ledger, build, write


@pytest.fixture(scope="session")
def built() -> Ledger:
    return build()


@pytest.fixture(scope="session")
def ledger_path(built: Ledger, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write(tmp_path_factory.mktemp("reports") / "ledger", built)


@pytest.fixture
def con(ledger_path: Path) -> Iterator[Any]:
    from ledger.store import open_reader

    connection = open_reader(ledger_path)
    try:
        yield connection
    finally:
        connection.close()
