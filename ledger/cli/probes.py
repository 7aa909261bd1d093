"""The asking half of ``migration-ledger check``: observe the broker, topics, flag log, worker
and sink, read-only and with short timeouts, and hand plain observations to ``ledger.checks``.

Nothing here creates, alters or commits anything: the admin client only lists and describes,
the flag log is read by an assigned consumer without a group, and the worker is asked over
HTTP. A dead broker must fail in seconds, not after kafka-python's 30 s bootstrap, so a raw
Metadata exchange (``probe_metadata``, standard library only) goes first and the Kafka clients
are built only once it answered.
"""

from __future__ import annotations

import contextlib
import json
import struct
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from ledger import wire
from ledger.acls import drift
from ledger.checks import (
    AclObservation,
    BrokerObservation,
    CheckReport,
    Finding,
    FlagLogObservation,
    Status,
    StoreObservation,
    Thresholds,
    TopicDifference,
    TopicsObservation,
    WorkerObservation,
    judge_acls,
    judge_broker,
    judge_flag_log,
    judge_store,
    judge_topics,
    judge_worker,
    skipped,
)
from ledger.errors import BrokerError, EventDecodeError, LedgerError
from ledger.events import CommandRejected, FlagChanged
from ledger.kafka.acls import planned_acls, read_acls
from ledger.kafka.admin import topic_differences
from ledger.kafka.broker import LocalBroker, probe_metadata
from ledger.kafka.clients import admin_client
from ledger.kafka.log import LogReader
from ledger.kafka.topics import TOPIC_SPECS, topic_name
from ledger.settings import Settings

__all__ = [
    "observe_broker",
    "observe_flag_log",
    "observe_store",
    "observe_topics",
    "observe_worker",
    "run_checks",
]

T = TypeVar("T")

_CLIENT_ID = "migration-ledger-check"
_LOOPBACK = frozenset({"127.0.0.1", "localhost"})


def run_checks(
    settings: Settings,
    *,
    timeout_s: float = 3.0,
    worker_url: str | None = None,
    thresholds: Thresholds | None = None,
    now: Callable[[], datetime],
) -> CheckReport:
    """Every check, in dependency order; a check whose prerequisite failed is SKIP."""
    thresholds = thresholds or Thresholds()
    findings: list[Finding] = []
    broker, admin = observe_broker(settings, timeout_s=timeout_s)
    try:
        findings.append(judge_broker(broker, timeout_s=timeout_s))
        flag_topic = settings.topic("flag_events")
        if admin is None:
            findings.append(skipped("topics", "broker unreachable"))
            findings.append(skipped("flag log", "broker unreachable"))
        else:
            topics = _guarded("topics", lambda: observe_topics(settings, admin))
            if isinstance(topics, Finding):
                findings.append(topics)
            else:
                findings.append(judge_topics(topics))
            if isinstance(topics, Finding) or flag_topic in topics.missing:
                findings.append(skipped("flag log", f"{flag_topic} missing"))
            else:
                findings.append(
                    _guarded(
                        "flag log",
                        lambda: judge_flag_log(observe_flag_log(settings, timeout_s=timeout_s)),
                    )
                )
            if settings.sasl_username is None:
                findings.append(skipped("acls", f"{settings.security_protocol}: no principals"))
            else:
                findings.append(_guarded("acls", lambda: judge_acls(observe_acls(settings, admin))))
        if worker_url is None:
            findings.append(skipped("worker", "no --worker-url given"))
        else:
            url = worker_url
            findings.append(
                _guarded(
                    "worker",
                    lambda: judge_worker(observe_worker(url, timeout_s=timeout_s), thresholds),
                )
            )
        findings.append(
            _guarded(
                "sink",
                lambda: judge_store(
                    observe_store(settings, admin, timeout_s=timeout_s), thresholds, now=now()
                ),
            )
        )
    finally:
        if admin is not None:
            admin.close()
    return CheckReport(tuple(findings))


def _guarded(check: str, run: Callable[[], T]) -> T | Finding:
    """Run one probe; an unexpected error becomes that line's FAIL, not a lost checklist."""
    try:
        return run()
    except Exception as exc:  # the other checks still matter to whoever is deploying
        return Finding(
            check,
            Status.FAIL,
            f"the check itself failed: {type(exc).__name__}: {exc}",
            "report this as a bug of `migration-ledger check`; check this part by hand",
        )


# --- broker ------------------------------------------------------------------------------


def observe_broker(settings: Settings, *, timeout_s: float) -> tuple[BrokerObservation, Any]:
    """The broker's answer, and an admin client for the next checks (None when it is down)."""
    bootstrap = settings.bootstrap_servers
    errors: list[str] = []
    # The raw probe speaks plaintext Kafka; a TLS or SASL listener is proven by the client.
    addresses = [] if settings.security_protocol != "PLAINTEXT" else bootstrap.split(",")
    for address in (a.strip() for a in addresses if a.strip()):
        try:
            probe_metadata(address, timeout=timeout_s)
            break
        except (OSError, ValueError, IndexError, struct.error) as exc:  # refused, slow, garbled
            errors.append(f"{address}: {exc or type(exc).__name__}")
    else:
        if addresses:
            return BrokerObservation(bootstrap, error="; ".join(errors) or "no address given"), None

    from kafka.errors import KafkaError

    try:
        admin = admin_client(
            settings,
            client_id=_CLIENT_ID,
            request_timeout_ms=int(timeout_s * 1000),
            bootstrap_timeout_ms=int(timeout_s * 1000),
        )
    except BrokerError as exc:
        return BrokerObservation(bootstrap, error=str(exc)), None
    try:
        cluster = admin.describe_cluster()
        brokers = list(cluster.get("brokers", []))
        api: tuple[int, ...] | None = None
        if brokers:
            data = admin.get_broker_version_data(brokers[0]["broker_id"])
            api = tuple(int(part) for part in data.broker_version)
    except KafkaError as exc:
        admin.close()
        return BrokerObservation(bootstrap, error=str(exc)), None
    seen = BrokerObservation(
        bootstrap,
        brokers=len(brokers),
        api_version=api,
        release=_local_release(bootstrap, settings),
        fenced=sum(1 for b in brokers if b.get("is_fenced")),
    )
    return seen, admin


def observe_acls(settings: Settings, admin: Any) -> AclObservation:
    """The broker's ACLs against the plan; a user who may not read them gets a WARN."""
    user = f"User:{settings.sasl_username}"
    try:
        actual, denies = read_acls(admin)
    except BrokerError as exc:
        return AclObservation(user, error=str(exc))
    return AclObservation(user, drifts=drift(planned_acls(settings), actual), denies=denies)


def _local_release(bootstrap: str, settings: Settings) -> str | None:
    """The exact Kafka release when this machine's ``kafka up`` runs the broker on that port."""
    host, _, port = bootstrap.split(",")[0].strip().rpartition(":")
    if host not in _LOOPBACK or not port.isdigit():
        return None
    try:
        state = LocalBroker(settings.cache_dir, port=int(port)).status()
    except Exception:  # a foreign broker or an odd cache: the version is a nicety, not a check
        return None
    return None if state is None else state.kafka_version


# --- topics ------------------------------------------------------------------------------


def observe_topics(settings: Settings, admin: Any) -> TopicsObservation:
    """Which specified topics are missing, and how existing ones differ (as ``ensure`` sees)."""
    # Deferred: kafka-python takes ~0.7 s to import: only code that talks to Kafka pays it.
    from kafka.errors import KafkaError

    wanted = {topic_name(settings, spec.logical): spec for spec in TOPIC_SPECS}
    flag_log = settings.topic("flag_events")
    try:
        existing = set(admin.list_topics())
        present = {name: spec for name, spec in wanted.items() if name in existing}
        # ensure's own comparison, so `check` and `topics ensure` never disagree.
        differences = topic_differences(admin, settings, present)
    except KafkaError as exc:
        return TopicsObservation(
            expected=tuple(wanted),
            differences=(TopicDifference("*", "describe", "an answer", str(exc)),),
            flag_log=flag_log,
        )
    return TopicsObservation(
        expected=tuple(wanted),
        missing=tuple(name for name in wanted if name not in existing),
        differences=tuple(differences),
        flag_log=flag_log,
    )


# --- flag log ----------------------------------------------------------------------------


def observe_flag_log(settings: Settings, *, timeout_s: float) -> FlagLogObservation:
    """Read the flag event log from offset 0 to its end, outside any consumer group."""
    topic = settings.topic("flag_events")
    events: list[FlagChanged | CommandRejected] = []
    undecodable = other = 0
    # The whole log is read; it grows by one event per flag change, so a few seconds go far.
    budget_s = max(3 * timeout_s, 5.0)
    try:
        with LogReader(settings, [topic], client_id=_CLIENT_ID, timeout_s=timeout_s) as reader:
            reader.seek_to_beginning()
            records = reader.read_to_end(timeout_s=budget_s)
    except BrokerError as exc:
        return FlagLogObservation(settings.flag, topic, error=str(exc))
    for record in records:
        try:
            event = wire.decode(record.value, "flag_events")
        except EventDecodeError:
            undecodable += 1
            continue
        if getattr(event, "flag", None) != settings.flag:
            other += 1
        elif isinstance(event, FlagChanged | CommandRejected):
            events.append(event)
        else:
            undecodable += 1  # a valid event of a type that has no place here
    return FlagLogObservation(
        settings.flag,
        topic,
        events=tuple(events),
        undecodable=undecodable,
        other_flags=other,
    )


# --- worker ------------------------------------------------------------------------------

#: Metric samples the worker line reports, summed over their labels.
_WORKER_SAMPLES = (
    "ledger_consumer_lag",
    "ledger_dead_letters_total",
    "ledger_pending_pairs",
    "ledger_health_rollbacks_total",
)


def observe_worker(url: str, *, timeout_s: float) -> WorkerObservation:
    """Ask /healthz (liveness), then /metrics (lag, pending pairs, dead letters)."""
    base = url.rstrip("/")
    try:
        with urllib.request.urlopen(f"{base}/healthz", timeout=timeout_s) as answer:
            status = int(answer.status)
            body = answer.read()
    except urllib.error.HTTPError as exc:
        return WorkerObservation(base, status_code=exc.code)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        return WorkerObservation(base, error=str(reason))
    app: str | None = None
    try:
        app = str(json.loads(body).get("app")) if body else None
    except (ValueError, AttributeError):
        app = None
    return WorkerObservation(
        base, status_code=status, app=app, metrics=_metrics(base, timeout_s=timeout_s)
    )


def _metrics(base: str, *, timeout_s: float) -> dict[str, float]:
    # Deferred: prometheus-client loads only where metrics are served.
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(f"{base}/metrics", timeout=timeout_s) as answer:
            text = answer.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError, ValueError):
        return {}  # liveness answered; missing figures are reported as such
    sums: dict[str, float] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name in _WORKER_SAMPLES:
                    sums[sample.name] = sums.get(sample.name, 0.0) + float(sample.value)
    except ValueError:
        return sums
    return sums


# --- sink / store ------------------------------------------------------------------------


def observe_store(settings: Settings, admin: Any = None, *, timeout_s: float) -> StoreObservation:
    """Whether the ledger folder can be read, its rows, its last commit and the sink's lag.

    The last commit is the newest manifest among each partition's latest segment (a
    compaction that merged the latest segment rewrites it, so the age can only look
    younger, never older). The lag needs the broker (``admin``); without it, it is unknown.
    """
    location = settings.duckdb
    where = str(location)
    try:
        if not location.exists() or (location.is_dir() and not any(location.iterdir())):
            return StoreObservation(where, exists=False)
    except OSError as exc:
        return StoreObservation(where, exists=True, error=exc.strerror or str(exc))
    try:
        from ledger.store.layout import Layout
        from ledger.store.reader import take_snapshot
    except ImportError:
        return StoreObservation(where, exists=True, reader_available=False)
    try:
        snapshot = take_snapshot(location)
    except (LedgerError, OSError) as exc:
        return StoreObservation(where, exists=True, error=str(exc))
    newest: dict[tuple[str, int], Any] = {}
    for segment in snapshot.segments:
        key = (segment.topic, segment.partition)
        if key not in newest or segment.last > newest[key].last:
            newest[key] = segment
    layout = Layout(location)
    stamps = []
    for segment in newest.values():
        with contextlib.suppress(OSError):  # compacted away since the snapshot: skip it
            stamps.append((layout.segment_dir(segment) / "manifest.json").stat().st_mtime)
    committed = snapshot.committed_offsets()
    return StoreObservation(
        where,
        exists=True,
        last_commit_at=datetime.fromtimestamp(max(stamps), UTC) if stamps else None,
        rows=sum(sum(rows.values()) for rows in snapshot.rows.values()),
        lag=None if admin is None else _sink_lag(settings, admin, committed, timeout_s),
    )


def _sink_lag(
    settings: Settings, admin: Any, committed: dict[tuple[str, int], int], timeout_s: float
) -> int | None:
    """Messages on the sink's topics past what the ledger holds (None if Kafka won't say)."""
    # Deferred: kafka-python takes ~0.7 s to import: only code that talks to Kafka pays it; the
    # faust app loads only when the worker or the sink runs.
    from kafka import TopicPartition
    from kafka.admin import OffsetSpec
    from kafka.errors import KafkaError

    from streams.sink import LEDGER_TOPICS

    try:
        existing = set(admin.list_topics())
        topics = [t for t in (settings.topic(name) for name in LEDGER_TOPICS) if t in existing]
        if not topics:
            return None
        partitions = [
            TopicPartition(t["name"], p["partition_index"])
            for t in admin.describe_topics(topics)
            for p in t.get("partitions", [])
        ]
        timeout_ms = int(timeout_s * 1000)
        earliest = admin.list_partition_offsets(
            dict.fromkeys(partitions, OffsetSpec.EARLIEST), timeout_ms=timeout_ms
        )
        latest = admin.list_partition_offsets(
            dict.fromkeys(partitions, OffsetSpec.LATEST), timeout_ms=timeout_ms
        )
    except KafkaError:
        return None
    lag = 0
    for tp in partitions:
        stored_next = committed.get((tp.topic, tp.partition), -1) + 1
        start = max(stored_next, earliest[tp].offset)  # expired records cannot lag
        lag += max(latest[tp].offset - start, 0)
    return lag
