"""Helpers for the switchover tests: live V1/V2 traffic, the CLI, the log as events."""

from __future__ import annotations

import os
import random
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

from pipeline_support import CLI, Worker

from ledger.cli.switchover import read_log
from ledger.events import Event, OperationRecorded, encode_event
from ledger.settings import Settings

Mode = Literal["healthy", "v2_errors", "v2_slow", "v1_spike"]
E = TypeVar("E", bound=Event)

#: Demo speed: 2 s windows closed 1 s after their end, the demo plan's 6 s soaks.
HEALTH_ENV = {"MIGRATION_LEDGER_HEALTH_WINDOW": "2", "MIGRATION_LEDGER_HEALTH_GRACE": "1"}


class Traffic(threading.Thread):
    """Every logical operation executed on V1 (primary) and V2 (shadow), published live.

    ``mode`` can be switched while it runs; ``changed_at`` says when (wall clock, UTC).
    """

    def __init__(self, settings: Settings, *, rate: float = 40.0, seed: int = 1) -> None:
        super().__init__(daemon=True, name="traffic")
        from kafka import KafkaProducer

        self.topic = settings.topic("operations")
        self.producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=10)
        self.rate = rate
        self.rng = random.Random(seed)
        self.mode: Mode = "healthy"
        self.changed_at = datetime.now(tz=UTC)
        self.sent = 0
        self.stopping = threading.Event()

    def switch(self, mode: Mode) -> datetime:
        self.changed_at = datetime.now(tz=UTC)
        self.mode = mode
        return self.changed_at

    def _execution(self, cid: str, n: int, pool: str, now: datetime) -> OperationRecorded:
        mode = self.mode
        latency = self.rng.lognormvariate(3, 0.3)
        failed = False
        if pool == "v1" and mode == "v1_spike":
            latency *= 3
            failed = self.rng.random() < 0.5
        if pool == "v2" and mode == "v2_slow":
            latency *= 4
        if pool == "v2" and mode == "v2_errors":
            failed = self.rng.random() < 0.4
        return OperationRecorded(
            event_id=f"{cid}-{pool}",
            correlation_id=cid,
            session_id=f"s{n % 101}",
            pool=pool,  # type: ignore[arg-type]
            role="primary" if pool == "v1" else "shadow",
            operation="execute_program",
            outcome="error" if failed else "ok",
            result=None if failed else {"rows": n % 7},
            error={"type": "timeout", "message": "took too long"} if failed else None,  # type: ignore[arg-type]
            started_at=now,
            duration_ms=latency,
        )

    def run(self) -> None:
        n = 0
        interval = 0.05
        per_tick = self.rate * interval
        owed = 0.0
        while not self.stopping.is_set():
            owed += per_tick
            now = datetime.now(tz=UTC)
            while owed >= 1:
                owed -= 1
                cid = f"op-{uuid.uuid4().hex}"
                for pool in ("v1", "v2"):
                    event = self._execution(cid, n, pool, now)
                    self.producer.send(self.topic, key=cid.encode(), value=encode_event(event))
                n += 1
                self.sent = n
            time.sleep(interval)
        self.producer.flush(timeout=10)
        self.producer.close()

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=15)


def start_worker(settings: Settings, workdir: Path) -> Worker:
    """``migration-ledger worker`` at demo speed (the test sets ``HEALTH_ENV``; the
    subprocess inherits it)."""
    assert all(os.environ.get(k) == v for k, v in HEALTH_ENV.items()), "set HEALTH_ENV first"
    worker = Worker(settings, workdir, pairing_timeout=3.0)
    worker.start()
    return worker


def cli(settings: Settings, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "MIGRATION_LEDGER_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "MIGRATION_LEDGER_TOPIC_PREFIX": settings.topic_prefix,
        "MIGRATION_LEDGER_FLAG": settings.flag,
    }
    return subprocess.run(
        [CLI, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def events_of(settings: Settings, kind: type[E], logicals: list[str]) -> list[E]:
    return [e for e in read_log(settings, logicals) if isinstance(e, kind)]


T = TypeVar("T")


def wait_for(
    find: Callable[[], T | None], *, timeout: float, worker: Worker, what: str, every: float = 1.0
) -> T:
    """Poll ``find`` until it returns something (not None/empty) or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        worker.assert_running()
        found = find()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{worker.tail()}")
        time.sleep(every)


def summary(events: list[Any]) -> str:
    return "\n".join(
        f"{getattr(e, 'type', '?')} {getattr(e, 'action', getattr(e, 'command', ''))} "
        f"stage={getattr(e, 'stage', '')} {getattr(e, 'reason', '')}"
        for e in events
    )
