"""The official OFREP providers (Python, Node) against the OFREP server: the router's answers.

No broker: the server runs in this process on a loopback port, over a flag client fed the
events the flag log writer would append, and records into a list. What is checked is the wire:
that an off-the-shelf OpenFeature SDK + ``openfeature-provider-ofrep`` reads our answers and
errors as the protocol means them.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from openfeature import api
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode

from ledger import flags
from ledger.events import OperationRecorded, RolloutDecided
from ledger.settings import Settings
from producers.flag_client import FlagClient
from producers.ofrep_server import OfrepService, make_app

FLAG = "v2_migration"
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
SESSIONS = [f"session-{n}" for n in range(50)]


class Recorded:
    def __init__(self) -> None:
        self.events: list[OperationRecorded | RolloutDecided] = []

    def publish(self, event: OperationRecorded | RolloutDecided) -> None:
        self.events.append(event)


def flag_client(*commands: dict[str, Any]) -> FlagClient:
    client = FlagClient(Settings(flag=FLAG), environ={}, clock=lambda: T0)
    state = flags.initial_state(FLAG)
    for n, fields in enumerate(commands):
        data = {"command_id": f"cmd-{n}", "flag": FLAG, "actor": "test", "reason": "test"}
        command = flags.decode_command(json.dumps({**data, **fields}))
        event = flags.decide_command(state, command, at=T0 + timedelta(seconds=n))
        assert event is not None
        state = flags.apply(state, event)
        client.ingest(event)
    return client


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def served() -> Iterator[tuple[str, FlagClient, Recorded]]:
    """``(base_url, flag_client, recorded)`` of a server running on a loopback port."""
    client = flag_client(
        {"command": "enable"},
        {"command": "set_percentage", "percentage_bp": 3_000},
        {"command": "set_session_override", "session_id": "session-0", "pool": "v2"},
    )
    recorded = Recorded()
    port = free_port()
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(make_app(OfrepService(client, recorded)))
    started = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(30)
    try:
        yield f"http://127.0.0.1:{port}", client, recorded
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)


def test_the_official_python_provider_gets_the_routers_answers(
    served: tuple[str, FlagClient, Recorded],
) -> None:
    base_url, client, recorded = served
    api.set_provider(OFREPProvider(base_url), domain="ofrep-test")
    ofrep = api.get_client(domain="ofrep-test")
    try:
        for n, session in enumerate(SESSIONS):
            context = EvaluationContext(
                targeting_key=session, attributes={"correlation_id": f"op-{n}"}
            )
            details = ofrep.get_string_details("migration-pool", "v1", context)
            decision = client.decide(session)
            assert details.error_code is None, details.error_message
            assert details.value == details.variant == decision.pool
            assert details.reason == ("TARGETING_MATCH" if n == 0 else "SPLIT")
            assert details.flag_metadata["bucket"] == decision.bucket
            assert details.flag_metadata["flag_version"] == 3
            shadow = ofrep.get_boolean_details("migration-shadow", False, context)
            assert shadow.value is True  # the defaults shadow everything

        missing = ofrep.get_string_details("migration-colour", "v1", EvaluationContext("s"))
        assert (missing.value, missing.error_code) == ("v1", ErrorCode.FLAG_NOT_FOUND)
        anonymous = ofrep.get_string_details("migration-pool", "v1", EvaluationContext())
        assert (anonymous.value, anonymous.error_code) == ("v1", ErrorCode.TARGETING_KEY_MISSING)
    finally:
        api.clear_providers()

    decisions = [e for e in recorded.events if isinstance(e, RolloutDecided)]
    assert [d.correlation_id for d in decisions] == [f"op-{n}" for n in range(len(SESSIONS))]
    assert {d.pool for d in decisions} == {"v1", "v2"}


NODE_PACKAGES = [
    "@openfeature/server-sdk",
    "@openfeature/core",
    "@openfeature/ofrep-provider",
    "@openfeature/ofrep-core",
]
NODE_SCRIPT = """
import { OpenFeature } from '@openfeature/server-sdk';
import { OFREPProvider } from '@openfeature/ofrep-provider';
const [baseUrl, ...sessions] = process.argv.slice(2);
await OpenFeature.setProviderAndWait(new OFREPProvider({ baseUrl }));
const client = OpenFeature.getClient();
const out = [];
for (const [n, targetingKey] of sessions.entries()) {
  const d = await client.getStringDetails(
    'migration-pool', 'v1', { targetingKey, correlation_id: 'node-' + n });
  out.push({ value: d.value, reason: d.reason, bucket: d.flagMetadata.bucket, error: d.errorCode });
}
const missing = await client.getStringDetails('migration-colour', 'v1', { targetingKey: 's' });
out.push({ value: missing.value, error: missing.errorCode });
console.log(JSON.stringify(out));
"""


@pytest.mark.skipif(shutil.which("npm") is None, reason="needs node and npm")
def test_the_official_node_provider_gets_the_routers_answers(
    served: tuple[str, FlagClient, Recorded], tmp_path: Path
) -> None:
    base_url, client, recorded = served
    install = subprocess.run(
        ["npm", "install", "--silent", "--no-audit", "--no-fund", *NODE_PACKAGES],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert install.returncode == 0, install.stderr
    (tmp_path / "evaluate.mjs").write_text(NODE_SCRIPT)
    sessions = SESSIONS[:20]
    run = subprocess.run(
        ["node", "evaluate.mjs", base_url, *sessions],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    *answers, missing = json.loads(run.stdout)
    for n, (session, answer) in enumerate(zip(sessions, answers, strict=True)):
        decision = client.decide(session)
        assert answer.get("error") is None  # JSON drops an undefined errorCode
        assert (answer["value"], answer["bucket"]) == (decision.pool, decision.bucket)
        assert answer["reason"] == ("TARGETING_MATCH" if n == 0 else "SPLIT")
    assert (missing["value"], missing["error"]) == ("v1", "FLAG_NOT_FOUND")
    decisions = [e for e in recorded.events if isinstance(e, RolloutDecided)]
    assert [d.correlation_id for d in decisions] == [f"node-{n}" for n in range(len(sessions))]
