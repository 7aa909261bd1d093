"""The broker manager's refusals and bookkeeping, without starting a JVM or reaching Maven.

Java and Maven are replaced by small shell scripts on a PATH built per test, so every
failure path (missing tool, old Java, failed fetch) runs exactly as it would on a machine.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ledger.cli.app import app
from ledger.errors import BrokerError
from ledger.kafka.broker import (
    KAFKA_VERSION,
    LocalBroker,
    check_java_version,
    ensure_jars,
    find_java,
    free_ports,
    new_cluster_id,
    port_is_free,
)

JAVA_17 = "echo 'openjdk version \"17.0.15\" 2025-04-15' >&2"


def _script(folder: Path, name: str, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def bare_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A PATH holding only what the test puts there (no java, no mvn), and no JAVA_HOME."""
    folder = tmp_path / "bin"
    folder.mkdir()
    monkeypatch.setenv("PATH", str(folder))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    return folder


@pytest.fixture
def listening() -> Iterator[int]:
    """A port some other program is listening on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache, also what the CLI sees through MIGRATION_LEDGER_CACHE_DIR."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("MIGRATION_LEDGER_CACHE_DIR", str(folder))
    return folder


# --- ports -------------------------------------------------------------------------------


def test_up_refuses_a_client_port_another_program_listens_on(cache: Path, listening: int) -> None:
    (controller_port,) = free_ports(1)
    broker = LocalBroker(cache, port=listening, controller_port=controller_port)
    with pytest.raises(BrokerError, match=rf"port 127\.0\.0\.1:{listening} is already in use"):
        broker.up()
    assert not (broker.state_dir / "broker.json").exists()


def test_up_refuses_a_controller_port_another_program_listens_on(
    cache: Path, listening: int
) -> None:
    (port,) = free_ports(1)
    broker = LocalBroker(cache, port=port, controller_port=listening)
    with pytest.raises(BrokerError, match=rf"controller port 127\.0\.0\.1:{listening}"):
        broker.up()


def test_port_clash_is_reported_before_java_is_even_looked_for(
    cache: Path, listening: int, bare_path: Path
) -> None:
    with pytest.raises(BrokerError, match="already in use"):
        LocalBroker(cache, port=listening).up()


def test_client_and_controller_port_must_differ(cache: Path) -> None:
    with pytest.raises(BrokerError, match="must differ"):
        LocalBroker(cache, port=9500, controller_port=9500)


def test_controller_port_defaults_to_the_next_port(cache: Path) -> None:
    assert LocalBroker(cache, port=9500).controller_port == 9501


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = free_ports(3)
    assert len(set(ports)) == 3
    assert all(port_is_free(port) for port in ports)


def test_a_listening_port_is_not_free(listening: int) -> None:
    assert not port_is_free(listening)


def test_each_port_has_its_own_state_folder(cache: Path) -> None:
    first, second = LocalBroker(cache, port=9500), LocalBroker(cache, port=9600)
    assert first.state_dir != second.state_dir
    assert first.state_dir.parent == second.state_dir.parent == (cache / "brokers").resolve()


# --- java --------------------------------------------------------------------------------


def test_missing_java_says_what_to_install(bare_path: Path) -> None:
    with pytest.raises(BrokerError, match=r"Java was not found.*Install a JDK"):
        find_java()


def test_missing_java_stops_up_before_anything_is_written(cache: Path, bare_path: Path) -> None:
    port, controller_port = free_ports(2)
    with pytest.raises(BrokerError, match="Java was not found"):
        LocalBroker(cache, port=port, controller_port=controller_port).up()
    assert not (cache / f"kafka-{KAFKA_VERSION}").exists()


def test_java_home_without_java_is_named_in_the_message(
    bare_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no-jdk"))
    with pytest.raises(BrokerError, match=r"JAVA_HOME=.*no-jdk has no bin/java"):
        find_java()


def test_java_home_wins_over_path(
    bare_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _script(bare_path, "java", JAVA_17)
    home_java = _script(tmp_path / "jdk" / "bin", "java", JAVA_17)
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "jdk"))
    assert find_java() == home_java


def test_java_older_than_17_is_refused_with_its_version(bare_path: Path) -> None:
    java = _script(bare_path, "java", "echo 'openjdk version \"11.0.22\" 2024-01-16' >&2")
    with pytest.raises(BrokerError, match=r"is Java 11, but Kafka .* needs Java 17"):
        check_java_version(java)


def test_old_style_java_versions_are_read_as_their_minor_number(bare_path: Path) -> None:
    java = _script(bare_path, "java", "echo 'java version \"1.8.0_392\"' >&2")
    with pytest.raises(BrokerError, match="is Java 8"):
        check_java_version(java)


def test_java_17_and_newer_are_accepted(bare_path: Path) -> None:
    assert check_java_version(_script(bare_path, "java", JAVA_17)) == 17
    newer = _script(bare_path, "java25", "echo 'openjdk version \"25\" 2025-09-16' >&2")
    assert check_java_version(newer) == 25


# --- maven -------------------------------------------------------------------------------


def test_missing_maven_says_what_to_install(cache: Path, bare_path: Path) -> None:
    _script(bare_path, "java", JAVA_17)
    port, controller_port = free_ports(2)
    with pytest.raises(BrokerError, match=r"Maven \(`mvn`\) was not found.*Install it"):
        LocalBroker(cache, port=port, controller_port=controller_port).up()


def test_a_failed_maven_fetch_reports_what_maven_said_and_leaves_no_runtime(
    cache: Path, bare_path: Path
) -> None:
    _script(bare_path, "mvn", "echo '[ERROR] Could not resolve dependencies'; exit 1")
    with pytest.raises(BrokerError, match=r"(?s)exit 1.*Could not resolve dependencies"):
        ensure_jars(cache)
    assert not (cache / f"kafka-{KAFKA_VERSION}" / "lib").exists()


def _fake_maven(bin_dir: Path, calls: Path) -> None:
    """Like the real fetch, copies jars into -DoutputDirectory=...; counts its calls.

    The PATH is bare in these tests, hence the absolute paths of mkdir and touch.
    """
    _script(
        bin_dir,
        "mvn",
        f"""echo called >> {calls}
for arg in "$@"; do case "$arg" in -DoutputDirectory=*) out="${{arg#*=}}";; esac; done
/bin/mkdir -p "$out" && /bin/touch "$out/kafka_2.13-{KAFKA_VERSION}.jar" "$out/kafka-clients.jar"
""",
    )


def test_jars_are_fetched_once_and_then_reused(
    cache: Path, bare_path: Path, tmp_path: Path
) -> None:
    calls = tmp_path / "calls"
    _fake_maven(bare_path, calls)
    lib = ensure_jars(cache)
    assert (lib / f"kafka_2.13-{KAFKA_VERSION}.jar").exists()
    assert (lib / ".complete").exists()
    assert ensure_jars(cache) == lib
    assert calls.read_text().count("called") == 1


def test_an_interrupted_fetch_is_fetched_again(
    cache: Path, bare_path: Path, tmp_path: Path
) -> None:
    calls = tmp_path / "calls"
    _fake_maven(bare_path, calls)
    half = cache / f"kafka-{KAFKA_VERSION}" / "lib"
    half.mkdir(parents=True)
    (half / "kafka-clients.jar").touch()  # jars without the completion marker
    ensure_jars(cache)
    assert calls.read_text().count("called") == 1
    assert (half / ".complete").exists()


def test_the_pom_names_kafka_and_the_logging_runtime(
    cache: Path, bare_path: Path, tmp_path: Path
) -> None:
    _fake_maven(bare_path, tmp_path / "calls")
    ensure_jars(cache)
    pom = (cache / f"kafka-{KAFKA_VERSION}" / "pom.xml").read_text()
    for artifact in ("kafka_2.13", "log4j-core", "log4j-slf4j2-impl", "slf4j-api"):
        assert f"<artifactId>{artifact}</artifactId>" in pom


# --- recorded state ----------------------------------------------------------------------


def _record(broker: LocalBroker, pid: int) -> Path:
    broker.state_dir.mkdir(parents=True, exist_ok=True)
    state_file = broker.state_dir / "broker.json"
    state_file.write_text(
        json.dumps(
            {
                "pid": pid,
                "port": broker.port,
                "controller_port": broker.controller_port,
                "state_dir": str(broker.state_dir),
                "data_dir": str(broker.state_dir / "data"),
                "log_dir": str(broker.state_dir / "logs"),
                "kafka_version": KAFKA_VERSION,
                "cluster_id": new_cluster_id(),
            }
        )
    )
    return state_file


def test_status_is_down_when_nothing_was_recorded(cache: Path) -> None:
    assert LocalBroker(cache, port=9500).status() is None


def test_a_record_whose_process_has_exited_is_dropped(cache: Path) -> None:
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    broker = LocalBroker(cache, port=9500)
    state_file = _record(broker, int(finished.stdout))
    assert broker.status() is None
    assert not state_file.exists()


def test_a_record_whose_pid_now_belongs_to_another_program_is_dropped(cache: Path) -> None:
    broker = LocalBroker(cache, port=9500)
    state_file = _record(broker, os.getpid())  # alive, but pytest is not a Kafka broker
    assert broker.status() is None
    assert not state_file.exists()


def test_an_unreadable_record_counts_as_down(cache: Path) -> None:
    broker = LocalBroker(cache, port=9500)
    broker.state_dir.mkdir(parents=True)
    (broker.state_dir / "broker.json").write_text("{not json")
    assert broker.status() is None


def test_down_without_a_broker_is_harmless(cache: Path) -> None:
    assert LocalBroker(cache, port=9500).down() is None


def test_cluster_ids_are_16_random_bytes_in_unpadded_base64url() -> None:
    ids = {new_cluster_id() for _ in range(50)}
    assert len(ids) == 50
    for cluster_id in ids:
        assert len(cluster_id) == 22
        assert "=" not in cluster_id
        assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16


# --- the CLI -----------------------------------------------------------------------------

runner = CliRunner()


def test_cli_status_says_down_for_a_port_without_a_broker(cache: Path) -> None:
    (port,) = free_ports(1)
    result = runner.invoke(app, ["kafka", "status", "--port", str(port)])
    assert result.exit_code == 0
    assert f"down: no Kafka broker of ours runs on port {port}" in result.output


def test_cli_down_twice_without_a_broker_is_harmless(cache: Path) -> None:
    (port,) = free_ports(1)
    for _ in range(2):
        result = runner.invoke(app, ["kafka", "down", "--port", str(port)])
        assert result.exit_code == 0
        assert "nothing to stop" in result.output


def test_cli_up_on_a_taken_port_fails_with_a_message_not_a_traceback(
    cache: Path, listening: int
) -> None:
    (controller_port,) = free_ports(1)
    result = runner.invoke(
        app, ["kafka", "up", "--port", str(listening), "--controller-port", str(controller_port)]
    )
    assert result.exit_code == 1
    assert f"Error: The port 127.0.0.1:{listening} is already in use" in result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_cli_up_without_java_fails_and_says_what_to_install(cache: Path, bare_path: Path) -> None:
    port, controller_port = free_ports(2)
    result = runner.invoke(
        app, ["kafka", "up", "--port", str(port), "--controller-port", str(controller_port)]
    )
    assert result.exit_code == 1
    assert "Java was not found" in result.output
    assert "Install a JDK" in result.output


def test_cli_up_with_equal_ports_fails_with_a_message(cache: Path) -> None:
    result = runner.invoke(app, ["kafka", "up", "--port", "9500", "--controller-port", "9500"])
    assert result.exit_code == 1
    assert "must differ" in result.output


def test_cli_rejects_a_port_out_of_range(cache: Path) -> None:
    result = runner.invoke(app, ["kafka", "status", "--port", "70000"])
    assert result.exit_code == 2
    assert "less than or equal to 65535" in result.output


def test_down_for_an_unknown_port_leaves_no_state_folder(cache: Path) -> None:
    broker = LocalBroker(cache, port=9500)
    broker.down()
    assert not broker.state_dir.exists()
