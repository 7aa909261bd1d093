"""Prometheus metrics of the worker, and the web pages that expose them.

Each app gets its own registry (not prometheus-client's global one), so tests can build many
apps in one process. ``install`` adds ``/metrics`` (Prometheus text format) and ``/healthz``
(liveness: the worker's event loop answers) to faust's web server, and a timer that refreshes
the consumer lag gauge.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

if TYPE_CHECKING:
    from streams.app import LedgerApp

__all__ = ["Metrics", "install"]

LAG_INTERVAL_S = 5.0


class Metrics:
    """The worker's counters and gauges, on a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.events_in = Counter(
            "ledger_events_in", "Messages read by the worker", ["topic"], registry=r
        )
        self.comparisons_out = Counter(
            "ledger_comparisons_out",
            "Comparisons published (late markers counted with late=true)",
            ["category", "late"],
            registry=r,
        )
        self.dead_letters = Counter(
            "ledger_dead_letters", "Messages dead-lettered", ["source"], registry=r
        )
        self.pairing = Counter(
            "ledger_pairing_outcomes",
            "What each arriving half or expiry did (stored, paired, duplicate, late, ...)",
            ["outcome"],
            registry=r,
        )
        self.replayed = Counter(
            "ledger_comparisons_replayed",
            "Comparisons published again after a restart re-read their input",
            registry=r,
        )
        self.pending_pairs = Gauge(
            "ledger_pending_pairs", "Halves waiting for their other half", registry=r
        )
        self.flag_commands = Counter(
            "ledger_flag_commands", "Flag commands decided", ["result"], registry=r
        )
        self.lag = Gauge(
            "ledger_consumer_lag",
            "Messages not yet read, per topic and partition",
            ["topic", "partition"],
            registry=r,
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def install(ledger_app: LedgerApp) -> None:
    """Add /metrics, /healthz and the lag timer to the app."""
    app = ledger_app.app
    metrics = ledger_app.metrics

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        # aiohttp wants the charset apart from the media type.
        media_type = CONTENT_TYPE_LATEST.split(";")[0]
        return web.bytes(metrics.exposition(), content_type=media_type)

    @app.page("/healthz")
    async def liveness(web: Any, request: Any) -> Any:
        return web.json({"status": "alive", "app": app.conf.id})

    async def refresh_lag() -> None:
        consumer = app.consumer
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            position = await consumer.position(tp)
            if highwater is None or position is None:
                continue
            metrics.lag.labels(tp.topic, str(tp.partition)).set(max(0, highwater - position))

    app.timer(LAG_INTERVAL_S)(refresh_lag)
