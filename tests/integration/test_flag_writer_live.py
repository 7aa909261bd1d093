"""The flag log writer on the real broker, driven by the `flags` command line."""

from __future__ import annotations

import json
import socket
import urllib.request
from pathlib import Path

from pipeline_support import Worker
from typer.testing import CliRunner

from ledger import flags
from ledger.cli.app import app
from ledger.events import FlagChanged
from ledger.kafka.admin import ensure_topics
from ledger.kafka.flag_commands import read_log
from ledger.settings import Settings

runner = CliRunner()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return str(response.read().decode())


def test_flags_commands_are_answered_by_the_writer_and_survive_a_restart(
    settings: Settings, tmp_path: Path
) -> None:
    ensure_topics(settings)
    port = free_port()
    worker = Worker(settings, tmp_path, pairing_timeout=5, web_port=port)

    def flags_cli(*args: str) -> tuple[int, str]:
        common = ["--bootstrap-servers", settings.bootstrap_servers]
        common += ["--topic-prefix", settings.topic_prefix]
        if args[0] not in ("show", "history"):
            common += ["--timeout", "60"]
        result = runner.invoke(app, ["flags", *args, *common], env={"COLUMNS": "200"})
        return result.exit_code, result.output

    worker.start()
    try:
        assert flags_cli("set", "v2_pool_enabled", "true", "--reason", "start ramp") == (
            0,
            f"{settings.flag} version 1: enable accepted\nV2 on, 0%, shadow on (100%)\n",
        )
        code, out = flags_cli("set", "v2_rollout_percentage", "25", "--reason", "ramp")
        assert (code, "version 2: set_percentage accepted") == (0, out.splitlines()[0][-34:])
        assert flags_cli("freeze", "--reason", "hold the ramp")[0] == 0
        code, out = flags_cli("set", "v2_rollout_percentage", "50", "--reason", "more")
        assert code == 1
        assert "rejected (frozen) at version 3" in out
        code, out = flags_cli(
            "set", "shadow_sample_percentage", "10", "--reason", "x", "--expected-version", "1"
        )
        assert code == 1
        assert "version_conflict" in out
        assert flags_cli("rollback", "--reason", "incident")[0] == 0
        assert worker.stop() == 0

        worker.start()  # the state must come back from the log, not from memory
        code, out = flags_cli("override", "session", "vip-1", "v1", "--reason", "pin")
        assert code == 0, out
        assert "version 5: set_session_override accepted" in out
        code, out = flags_cli("show")
        assert code == 0
        assert "version 5" in out
        assert "session vip-1 -> v1" in out
        code, out = flags_cli("history")
        assert code == 0
        assert "REJECTED frozen" in out
        assert "start ramp" in out
        liveness = json.loads(http_get(port, "/healthz"))
        assert liveness["status"] == "alive"
        metrics = http_get(port, "/metrics")
        assert 'ledger_flag_commands_total{result="accepted"} 1.0' in metrics  # since restart
    finally:
        worker.stop()

    events = read_log(settings)
    state = flags.fold(events, settings.flag)
    assert state.version == 5
    assert [e.version for e in events if isinstance(e, FlagChanged)] == [1, 2, 3, 4, 5]
    assert len(events) == 7  # five changes and two rejections, each command answered once
