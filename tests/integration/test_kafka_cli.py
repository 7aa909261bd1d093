"""`migration-ledger kafka up | status | down`, end to end with a real JVM, twice in a row.

Runs on free ports with its own state folder, so it never touches the dev broker; the jars
come from the usual cache through a symlink, so nothing is fetched twice.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from ledger.cli.app import app
from ledger.kafka.broker import KAFKA_VERSION, free_ports, kafka_home, probe_metadata
from ledger.settings import Settings


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    jars = kafka_home(Settings().cache_dir)
    jars.mkdir(parents=True, exist_ok=True)
    folder = tmp_path / "cache"
    folder.mkdir()
    (folder / f"kafka-{KAFKA_VERSION}").symlink_to(jars)
    monkeypatch.setenv("MIGRATION_LEDGER_CACHE_DIR", str(folder))
    return folder


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def test_up_status_down_twice_in_a_row_leaves_no_broker_behind(cache: Path) -> None:
    runner = CliRunner()
    port, controller_port = free_ports(2)
    ports = ["--port", str(port)]
    for _ in range(2):
        started = runner.invoke(
            app, ["kafka", "up", *ports, "--controller-port", str(controller_port)]
        )
        assert started.exit_code == 0, started.output
        assert f"is up at 127.0.0.1:{port}" in started.output
        assert probe_metadata(f"127.0.0.1:{port}") == 1

        again = runner.invoke(
            app, ["kafka", "up", *ports, "--controller-port", str(controller_port)]
        )
        assert again.exit_code == 0
        assert "already up" in again.output

        status = runner.invoke(app, ["kafka", "status", *ports])
        assert status.exit_code == 0
        assert status.output.startswith(f"up: Kafka {KAFKA_VERSION} at 127.0.0.1:{port}")
        pid = int(status.output.split("(pid ")[1].split(",")[0])
        assert str(cache / "brokers" / str(port) / "data") in status.output

        stopped = runner.invoke(app, ["kafka", "down", *ports])
        assert stopped.exit_code == 0
        assert f"(pid {pid}) stopped" in stopped.output
        assert not _alive(pid)

        status = runner.invoke(app, ["kafka", "status", *ports])
        assert status.output.startswith("down:")
