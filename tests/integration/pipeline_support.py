"""Helpers for the pipeline tests: a worker subprocess, a realistic messy stream, readers."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ledger.events import OperationRecorded, encode_event
from ledger.settings import Settings

CLI = str(Path(sys.executable).parent / "migration-ledger")
T0 = datetime(2025, 3, 1, 10, 0, tzinfo=UTC)


class Worker:
    """``migration-ledger worker`` as a subprocess with its own app id and data dir."""

    def __init__(
        self,
        settings: Settings,
        workdir: Path,
        *,
        pairing_timeout: float,
        web_port: int | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.env = env or {}
        self.workdir = workdir
        self.pairing_timeout = pairing_timeout
        self.web_port = web_port
        self.process: subprocess.Popen[bytes] | None = None
        self.log = workdir / "worker.log"

    def start(self) -> None:
        env = {
            **os.environ,
            "MIGRATION_LEDGER_BOOTSTRAP_SERVERS": self.settings.bootstrap_servers,
            "MIGRATION_LEDGER_TOPIC_PREFIX": self.settings.topic_prefix,
            "MIGRATION_LEDGER_CACHE_DIR": str(self.workdir / "cache"),
            "MIGRATION_LEDGER_FLAG": self.settings.flag,
            **self.env,
        }
        command = [
            CLI,
            "worker",
            "--pairing-timeout",
            str(self.pairing_timeout),
            *(["--without-web"] if self.web_port is None else ["--web-port", str(self.web_port)]),
            "--loglevel",
            os.environ.get("TEST_WORKER_LOGLEVEL", "warning"),
        ]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                command, cwd=self.workdir, env=env, stdout=log, stderr=subprocess.STDOUT
            )

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final commit; what a crash looks like."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=10)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
            raise AssertionError(f"worker ignored SIGTERM for {timeout} s") from None

    def assert_running(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"worker exited {self.process.returncode}:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


#: category -> (V1 outcome/result, V2 outcome/result) that the default rules classify so.
SHAPES: dict[str, Callable[[int], tuple[dict[str, Any], dict[str, Any]]]] = {
    "match": lambda n: ({"result": {"rows": n, "ok": True}}, {"result": {"rows": n, "ok": True}}),
    "value_mismatch": lambda n: ({"result": {"rows": n}}, {"result": {"rows": n + 1}}),
    "shape_mismatch": lambda n: ({"result": {"rows": n}}, {"result": {"count": n}}),
    "v2_error": lambda n: (
        {"result": {"rows": n}},
        {"error": {"type": "timeout_error", "message": "took too long"}},
    ),
    "v1_error": lambda n: (
        {"error": {"type": "pool_timeout", "message": "no worker"}},
        {"result": {"rows": n}},
    ),
    "error_match": lambda n: (
        {"error": {"type": "pool_timeout", "message": "no worker"}},
        {"error": {"type": "timeout_error", "message": "took too long"}},
    ),
}
WEIGHTS = {
    "match": 80,
    "value_mismatch": 6,
    "shape_mismatch": 4,
    "v2_error": 5,
    "v1_error": 3,
    "error_match": 2,
}


def operation(
    cid: str, pool: str, n: int, payload: dict[str, Any], *, step_ms: int = 1
) -> OperationRecorded:
    """Execution ``n`` of a pair, started ``n * step_ms`` ms after ``T0``."""
    error = payload.get("error")
    return OperationRecorded(
        event_id=f"{cid}-{pool}",
        correlation_id=cid,
        session_id=f"s{n % 997}",
        pool=pool,  # type: ignore[arg-type]
        role="primary" if pool == "v1" else "shadow",
        operation="execute_program",
        outcome="error" if error else "ok",
        result=None if error else payload["result"],
        error=error,
        started_at=T0 + timedelta(milliseconds=n * step_ms),
        duration_ms=float(n % 50),
    )


def _corrupt(pool: str, n: int, old: bytes, new: bytes) -> bytes:
    valid = encode_event(operation(f"bad-{n}", pool, n, {"result": 1}))
    assert old in valid, (old, valid)
    return valid.replace(old, new)


#: One of each kind of bad input: not JSON, missing fields, unknown pool, negative duration,
#: naive timestamp.
MALFORMED: list[Callable[[int], bytes]] = [
    lambda n: b"{not json " + str(n).encode(),
    lambda n: json.dumps({"type": "OperationRecorded", "event_id": f"bad-{n}"}).encode(),
    lambda n: _corrupt("v1", n, b'"pool":"v1"', b'"pool":"v3"'),
    lambda n: _corrupt("v2", n, b'"duration_ms":', b'"duration_ms":-1'),
    lambda n: _corrupt("v1", n, b'Z","duration_ms"', b'","duration_ms"'),
]


@dataclass
class Stream:
    """A messy stream of ``(key, value)`` and what the pipeline must make of it."""

    messages: list[tuple[bytes, bytes]] = field(default_factory=list)
    expected: dict[str, str] = field(default_factory=dict)  # correlation id -> category
    malformed: set[bytes] = field(default_factory=set)


def messy_stream(
    pairs: int,
    *,
    seed: int = 7,
    duplicates: float = 0.02,
    missing_shadows: float = 0.01,
    malformed: float = 0.005,
    window: int = 200,
    step_ms: int = 1,
) -> Stream:
    """Pairs out of order (halves shuffled within ``window`` messages), retried duplicates,
    pairs whose shadow never comes, and malformed input; pair ``n`` starts ``n * step_ms`` ms
    after ``T0`` (event time, which drives the pairing timeout)."""
    rng = random.Random(seed)
    stream = Stream()
    halves: list[tuple[bytes, bytes]] = []
    categories = list(WEIGHTS)
    weights = list(WEIGHTS.values())
    missing = set(rng.sample(range(pairs), round(pairs * missing_shadows)))
    for n in range(pairs):
        cid = f"op-{n:06d}"
        category = rng.choices(categories, weights)[0]
        v1_payload, v2_payload = SHAPES[category](n)
        key = cid.encode()
        halves.append((key, encode_event(operation(cid, "v1", n, v1_payload, step_ms=step_ms))))
        if n in missing:
            stream.expected[cid] = "shadow_missing"
        else:
            halves.append((key, encode_event(operation(cid, "v2", n, v2_payload, step_ms=step_ms))))
            stream.expected[cid] = category
    for start in range(0, len(halves), window):
        chunk = halves[start : start + window]
        rng.shuffle(chunk)
        halves[start : start + window] = chunk
    messages = list(halves)
    for _ in range(round(len(halves) * duplicates)):
        original = rng.randrange(len(halves))
        at = min(len(messages), original + rng.randrange(1, window * 2))
        messages.insert(at, halves[original])
    for n in range(round(len(halves) * malformed)):
        value = MALFORMED[n % len(MALFORMED)](n)
        stream.malformed.add(value)
        messages.insert(rng.randrange(len(messages)), (f"bad-{n}".encode(), value))
    stream.messages = messages
    return stream


def percentage_command(flag: str, command_id: str, percentage_bp: int) -> bytes:
    from ledger import flags

    command = flags.SetPercentage(
        command_id=command_id,
        flag=flag,
        actor="test",
        reason="ramp while the worker is killed",
        percentage_bp=percentage_bp,
    )
    return flags.encode_command(command)


def publish(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, batch_size=256 * 1024)
    try:
        for key, value in messages:
            producer.send(topic, key=key, value=value)
        producer.flush(timeout=60)
    finally:
        producer.close()


class TopicReader:
    """Reads a whole topic from the beginning, keeps every value, polls on demand."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        from kafka import KafkaConsumer

        self.consumer = KafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            group_id=None,
        )
        self.values: list[dict[str, Any]] = []
        self.raw: list[bytes] = []

    def poll(self, seconds: float = 0.5) -> int:
        batch = self.consumer.poll(timeout_ms=int(seconds * 1000), max_records=50_000)
        for records in batch.values():
            for record in records:
                self.raw.append(record.value)
                self.values.append(json.loads(record.value))
        return len(self.values)

    def until(self, done: Callable[[], bool], *, timeout: float, worker: Worker) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            worker.assert_running()
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out with {len(self.values)} values\n{worker.tail()}")
            self.poll()

    def close(self) -> None:
        self.consumer.close()
