"""`migration-ledger kafka up | status | down`, end to end with a real JVM, twice in a row.

Runs on free ports with its own state folder, so it never touches the dev broker; the jars
come from the usual cache through a symlink, so nothing is fetched twice.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from ledger.cli.app import app
from ledger.kafka.broker import (
    KAFKA_VERSION,
    LocalBroker,
    free_ports,
    kafka_home,
    new_cluster_id,
    probe_metadata,
)
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


# `kafka up` starts a broker meant to outlive the command. Run by CliRunner inside pytest, the
# command's Popen handle is collected while that broker still runs (on purpose), and Python
# reports "subprocess ... is still running"; a real `migration-ledger kafka up` exits first.
@pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <function Popen.__del__:pytest.PytestUnraisableExceptionWarning"
)
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


def test_a_cluster_id_beginning_with_a_dash_formats_and_starts(tmp_path: Path) -> None:
    # 1 in 64 random ids begin with "-"; the storage tool once took it for an option.
    port, controller_port = free_ports(2)
    broker = LocalBroker(
        Settings().cache_dir, port=port, controller_port=controller_port, state_root=tmp_path
    )
    broker.state_dir.mkdir(parents=True)
    (broker.state_dir / "cluster.id").write_text("-" + new_cluster_id()[1:] + "\n")
    broker.up(timeout=120, die_with_parent=True)
    try:
        assert probe_metadata(broker.bootstrap, timeout=30) == 1
    finally:
        broker.down()
