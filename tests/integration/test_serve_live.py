"""`migration-ledger serve` on the real broker: OFREP answers the flag set through `flags set`."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from pipeline_support import CLI, Worker
from typer.testing import CliRunner

from ledger.cli.app import app
from ledger.events import RolloutDecided, decode_event
from ledger.kafka.admin import ensure_topics
from ledger.kafka.log import LogReader
from ledger.settings import Settings
from producers.flag_client import FlagClient

runner = CliRunner()
SESSIONS = [f"session-{n}" for n in range(20)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def post(port: int, path: str, document: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(document).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def wait_for_version(port: int, version: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    seen: object = None
    while time.monotonic() < deadline:
        try:
            status, answer = post(
                port, "/ofrep/v1/evaluate/flags", {"context": {"correlation_id": "probe"}}
            )
            seen = answer
            if status == 200 and answer["flags"][0]["metadata"]["flag_version"] >= version:
                return
        except OSError as exc:  # not listening yet
            seen = exc
        time.sleep(0.3)
    raise AssertionError(f"serve never reached flag version {version}: {seen}")


def _decisions(records: Any) -> dict[str, RolloutDecided]:
    decoded = (decode_event(r.value) for r in records if r.value is not None)
    return {d.correlation_id: d for d in decoded if isinstance(d, RolloutDecided)}


def test_ofrep_answers_agree_with_decide_and_each_decision_reaches_the_decisions_topic(
    settings: Settings, tmp_path: Path
) -> None:
    ensure_topics(settings)
    worker = Worker(settings, tmp_path, pairing_timeout=5)
    common = ["--bootstrap-servers", settings.bootstrap_servers]
    common += ["--topic-prefix", settings.topic_prefix, "--timeout", "60"]
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MIGRATION_LEDGER_")},
        "MIGRATION_LEDGER_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "MIGRATION_LEDGER_TOPIC_PREFIX": settings.topic_prefix,
        "MIGRATION_LEDGER_CACHE_DIR": str(tmp_path / "cache"),
        "MIGRATION_LEDGER_FLAG": settings.flag,
    }
    log_path = tmp_path / "serve.log"
    server: subprocess.Popen[bytes] | None = None
    worker.start()
    try:
        for name, value in (("v2_pool_enabled", "true"), ("v2_rollout_percentage", "50")):
            result = runner.invoke(app, ["flags", "set", name, value, "--reason", "t", *common])
            assert result.exit_code == 0, result.output
        with log_path.open("ab") as log:
            server = subprocess.Popen(
                [CLI, "serve", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT
            )
        wait_for_version(port, 2)

        answers: dict[str, dict[str, Any]] = {}
        for n, session in enumerate(SESSIONS):
            context = {"targetingKey": session, "correlation_id": f"ofrep-{n}"}
            status, answer = post(
                port, "/ofrep/v1/evaluate/flags/migration-pool", {"context": context}
            )
            assert status == 200, answer
            answers[f"ofrep-{n}"] = answer
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=10) as page:
            status_document = json.loads(page.read())
        assert (status_document["flag_version"], status_document["stage"]) == (2, "ramping")
        assert sum(status_document["served"]["pools"].values()) >= len(SESSIONS)
        status, missing = post(port, "/ofrep/v1/evaluate/flags/other-flag", {"context": {}})
        assert (status, missing["errorCode"]) == (404, "FLAG_NOT_FOUND")

        with FlagClient(settings, environ={}) as client:
            assert client.wait_until_version(2, timeout=60)
            for n, session in enumerate(SESSIONS):
                answer = answers[f"ofrep-{n}"]
                decision = client.decide(session)
                assert answer["value"] == decision.pool
                assert answer["reason"] == "SPLIT"
                assert answer["metadata"]["bucket"] == decision.bucket
                assert answer["metadata"]["threshold_bp"] == 5_000
        assert {a["value"] for a in answers.values()} == {"v1", "v2"}  # 20 sessions at 50 %

        with LogReader(settings, [settings.topic("decisions")], timeout_s=10) as reader:
            assert reader.partitions(wait_s=30)
            reader.seek_to_beginning()
            records = reader.tail(lambda got: set(answers) <= set(_decisions(got)), timeout_s=60)
        decisions = _decisions(records)
        assert "probe" in decisions  # the bulk probes are recorded too
        for correlation_id, answer in answers.items():
            decision = decisions[correlation_id]
            assert decision.event_id == answer["metadata"]["decision_id"]
            assert decision.pool == answer["value"]
            assert decision.flag_version == 2
    finally:
        if server is not None:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
        worker.stop()
    output = log_path.read_text()
    assert server.returncode == 0, output
    assert "recorded evaluations" in output, output
    assert "0 decisions left in" in output, output  # everything reached Kafka before exit
