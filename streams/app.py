"""The one place that creates the faust app the worker runs.

``create_app`` builds a fresh app from ``Settings`` (a factory, so tests make apps with unique
ids and topic prefixes side by side) and lets every module in ``AGENT_MODULES`` install its
agents, tables, timers and pages on it through ``install(ledger_app)``. A new stream processor
(health windows, switchover) is one module with an ``install`` function and one line here.

Every topic carries raw bytes: agents decode with ``ledger.events`` themselves, so input that
is not even JSON reaches the agent and can be dead-lettered instead of crashing the stream.
Processing is at-least-once; what agents publish is idempotent downstream (ids derived from
the input), which faust's exactly-once mode, with its open fencing issues, would not improve.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faust

from ledger.kafka.clients import ssl_context
from ledger.kafka.topics import topic_name
from ledger.settings import Settings
from streams.metrics import Metrics

__all__ = ["AGENT_MODULES", "DEFAULT_WEB_PORT", "LedgerApp", "create_app", "faust_credentials"]

#: Modules whose ``install(ledger_app)`` runs when the app is created, in this order.
AGENT_MODULES: tuple[str, ...] = (
    "streams.metrics",
    "streams.pairing",
    "streams.flag_writer",
    "streams.health",
    "streams.switchover",
)

DEFAULT_WEB_PORT = 6066


class _QuietApp(faust.App):
    """faust's app without its Monitor sensor.

    The Monitor keeps per-event statistics (a dict update, timestamps and deques for every
    message in and out of every stream) that nothing here reads: /metrics has its own counters.
    """

    def on_init_dependencies(self) -> Any:
        dependencies = super().on_init_dependencies()
        self.sensors.remove(self.monitor)
        return dependencies


@dataclass
class LedgerApp:
    """The faust app with what its agents share: settings, metrics, options, topics."""

    app: faust.App
    settings: Settings
    metrics: Metrics
    options: dict[str, Any] = field(default_factory=dict)
    _topics: dict[str, Any] = field(default_factory=dict)
    #: name -> agent, for tests (``agents["pairing"].test_context()``).
    agents: dict[str, Any] = field(default_factory=dict)
    #: name -> helper object an install function wants to expose (tests, the bench).
    parts: dict[str, Any] = field(default_factory=dict)

    def runs_singletons(self) -> bool:
        """Whether this worker runs what must run once in the consumer group.

        ``ledger.flag-commands`` has one partition, so exactly one worker of the group is
        assigned it: the one whose flag log writer reads it. The health merger and the
        switchover controller run there too. During a rebalance two workers may both answer
        yes for a moment; everything they publish carries derived ids (a repeated command
        or window changes nothing).
        """
        # Deferred: faust loads only in the worker.
        from faust.types import TP

        consumer = self.app.consumer
        try:
            assigned = consumer.assignment()
        except Exception:  # not started yet, or stopping
            return False
        return TP(topic_name(self.settings, "flag_commands"), 0) in assigned

    def topic(self, logical: str) -> Any:
        """The faust topic (raw bytes) for a logical name; one object per name."""
        if logical not in self._topics:
            self._topics[logical] = self.app.topic(
                topic_name(self.settings, logical),
                key_type=bytes,
                value_type=bytes,
                partitions=None,
            )
        return self._topics[logical]


def faust_credentials(settings: Settings) -> Any:
    """faust's ``broker_credentials``: the settings every other client connects with."""
    if settings.security_protocol == "PLAINTEXT":
        return None
    context = ssl_context(settings)
    if settings.sasl_mechanism is None:
        return faust.SSLCredentials(context)
    assert settings.sasl_password is not None
    return faust.SASLCredentials(
        username=settings.sasl_username,
        password=settings.sasl_password.get_secret_value(),
        ssl_context=context,
        mechanism=settings.sasl_mechanism,
    )


def create_app(
    settings: Settings,
    *,
    app_id: str | None = None,
    web_enabled: bool = True,
    web_port: int = DEFAULT_WEB_PORT,
    modules: Sequence[str] = AGENT_MODULES,
    datadir: Path | None = None,
    **options: Any,
) -> LedgerApp:
    """A new faust app for ``settings`` with the agents of ``modules`` installed.

    ``options`` are read by the agent modules (``rules_path``, ``keep_for_timeouts``...).
    """
    app_id = app_id or f"{settings.topic_prefix}migration-ledger"
    datadir = datadir or settings.cache_dir / "faust" / app_id
    datadir.mkdir(parents=True, exist_ok=True)  # faust creates only the last level
    brokers = [f"kafka://{host.strip()}" for host in settings.bootstrap_servers.split(",")]
    app = _QuietApp(
        app_id,
        broker=brokers,
        broker_credentials=faust_credentials(settings),  # None for PLAINTEXT
        store="memory://",
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=settings.partitions,
        topic_replication_factor=1,
        processing_guarantee="at_least_once",
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=1.0,
        # Fetch what the broker has in big batches (faust's default 500 records per poll makes
        # a backlog a fetch per 500 records); the pairing agent takes them in batches too.
        broker_max_poll_records=5_000,
        stream_buffer_maxsize=20_000,
        # A worker that died holds its partitions until its session expires; a restarted one
        # waits that long before it can resume (faust's default is 60 s).
        broker_session_timeout=10.0,
        broker_heartbeat_interval=2.0,
        # Slots and comparisons are a few kB each; aiokafka's default 16 kB batches would
        # carry a handful per round trip and cap the worker at a few hundred pairs a second.
        producer_max_batch_size=1_000_000,
        producer_max_request_size=4_000_000,
        producer_linger_ms=2,
        web_enabled=web_enabled,
        web_port=web_port,
        web_bind="127.0.0.1",
        web_host="127.0.0.1",
        datadir=str(datadir),
        worker_redirect_stdouts=False,
    )
    # Table writes queue in faust's producer buffer; past 100 messages faust logs a warning
    # for every message while it drains them. Past 1,000 it holds the stream back: a buffer
    # far larger would make every offset commit (which flushes it first) take seconds.
    app.producer.buffer.max_messages = 1_000
    ledger_app = LedgerApp(app=app, settings=settings, metrics=Metrics(), options=dict(options))
    for module in modules:
        importlib.import_module(module).install(ledger_app)
    return ledger_app
