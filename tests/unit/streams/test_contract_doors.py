"""Every door gives the same verdict (issue 12): the pairing agent, the sink, ingest, export.

Properties over generated wire events, valid and mutated:

- an accepted event round-trips wire -> ledger columns -> export -> wire with the same meaning
  (the columns rebuild the event the wire decodes to; the export is the wire, byte for byte;
  ingesting the export stores the same events);
- a refused one yields exactly one dead letter, carrying its original bytes;
- the worker's verdict (and reason) and the sink's agree on every input.
"""

from __future__ import annotations

import asyncio
import base64
import json
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.events import (
    ComparisonRecorded,
    DeadLettered,
    OperationRecorded,
    decode_event,
    decode_event_object,
)
from ledger.store.reader import open_reader
from ledger.store.transfer import export_ledger, ingest_files
from ledger.store.writer import LedgerWriter, SourceRecord
from streams.dead_letters import Rejected, decode_or_reject
from streams.metrics import Metrics
from streams.pairing import PairingAgent

OPS = "t.pool.operations"

IDS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
TEXT = st.characters(blacklist_categories=("Cs",))
JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(TEXT, max_size=8)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(TEXT, max_size=5), inner),
    max_leaves=12,
)
T0 = datetime(2026, 3, 1, tzinfo=UTC)


@st.composite
def operation_docs(draw: st.DrawFn) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "event_id": draw(st.text(IDS, min_size=1, max_size=12)),
        "correlation_id": draw(st.text(IDS, min_size=1, max_size=12)),
        "session_id": draw(st.none() | st.text(IDS, max_size=12)),
        "pool": draw(st.sampled_from(["v1", "v2"])),
        "role": draw(st.sampled_from(["primary", "shadow"])),
        "operation": draw(st.text(TEXT, min_size=1, max_size=12)),
        "outcome": "ok",
        "result": draw(JSON_VALUES),
        "started_at": (T0 + timedelta(microseconds=draw(st.integers(0, 10**12)))).isoformat(),
        "duration_ms": draw(st.floats(0, 1e12) | st.integers(0, 2**53)),
    }
    if draw(st.booleans()):
        doc["type"] = "OperationRecorded"  # on a one-type topic it may be left out
    if draw(st.booleans()):
        doc["resources"] = {
            "cpu_ms": draw(st.none() | st.floats(0, 1e9)),
            "memory_bytes": draw(st.none() | st.integers(0, 2**63 - 1)),
            "worker_id": draw(st.none() | st.text(TEXT, max_size=6)),
        }
    return doc


def _mutations(doc: dict[str, Any], text: bytes, draw: st.DrawFn) -> bytes:
    kind = draw(
        st.sampled_from(
            [
                "bit_flip",
                "truncate",
                "duplicate_key",
                "nan",
                "infinity",
                "beyond_double",
                "beyond_int64",
                "schema_version",
                "type_swap",
                "deep",
                "huge_id",
                "nul_id",
                "lone_surrogate",
                "wrong_type",
            ]
        )
    )
    if kind == "bit_flip":
        at = draw(st.integers(0, len(text) - 1))
        return text[:at] + bytes([text[at] ^ (1 << draw(st.integers(0, 7)))]) + text[at + 1 :]
    if kind == "truncate":
        return text[: draw(st.integers(0, len(text) - 1))]
    body = dict(doc)
    if kind == "duplicate_key":
        key = draw(st.sampled_from(sorted(body)))
        return (
            text[:-1]
            + b","
            + json.dumps(key).encode()
            + b":"
            + json.dumps(body[key]).encode()
            + b"}"
        )
    if kind in ("nan", "infinity", "beyond_double"):
        literal = {"nan": "NaN", "infinity": "-Infinity", "beyond_double": "1e999"}[kind]
        body["duration_ms"] = "__N__"
        return json.dumps(body).replace('"__N__"', literal).encode()
    if kind == "beyond_int64":
        body["resources"] = {"memory_bytes": 2**63 + draw(st.integers(0, 2**70))}
    elif kind == "schema_version":
        body["schema_version"] = draw(st.integers(2, 2**70) | st.integers(-(2**70), 0))
    elif kind == "type_swap":
        key = draw(st.sampled_from(["pool", "duration_ms", "started_at", "correlation_id"]))
        body[key] = draw(st.sampled_from([[1], {"a": 1}, True, 7, "x"]))
    elif kind == "deep":
        body["result"] = "__D__"
        depth = draw(st.integers(65, 5_000))
        return json.dumps(body).replace('"__D__"', "[" * depth + "]" * depth).encode()
    elif kind == "huge_id":
        body["session_id"] = "s" * draw(st.integers(1025, 200_000))
    elif kind == "nul_id":
        body["event_id"] = body["event_id"] + "\x00"
    elif kind == "lone_surrogate":
        body["result"] = "__S__"
        return json.dumps(body).replace("__S__", "\\udc80").encode()
    elif kind == "wrong_type":
        body["type"] = "ComparisonRecorded"
    return json.dumps(body).encode()


@st.composite
def wire_inputs(draw: st.DrawFn) -> tuple[bytes, bytes | None]:
    """(value, key): a valid operation or a mutation of one, keyed by its correlation id."""
    doc = draw(operation_docs())
    text = json.dumps(doc).encode()
    key = doc["correlation_id"].encode()
    if draw(st.integers(0, 3)) == 0:
        return text, key
    return _mutations(doc, text, draw), key


def _worker(value: bytes, key: bytes | None) -> OperationRecorded | str:
    """The pairing agent's verdict (its very call)."""
    try:
        return decode_or_reject(value, OperationRecorded, topic=OPS, key=key)
    except Rejected as rejected:
        return rejected.reason


class _Sink:
    """One ledger writer across examples (offsets keep growing, as on a live topic).

    A ledger also refuses a known event id with other content (idempotence, not the
    contract): an example re-using a stored id gets a fresh ledger.
    """

    def __init__(self) -> None:
        self.offset = 0
        self._open()

    def _open(self) -> None:
        self.folder = tempfile.TemporaryDirectory()
        self.writer = LedgerWriter(Path(self.folder.name) / "l", fsync=False)
        self.ids: set[str] = set()

    def close(self) -> None:
        self.writer.close()
        self.folder.cleanup()

    def verdict(self, value: bytes, key: bytes | None, event_id: str | None) -> tuple[str, Any]:
        if event_id is not None and event_id in self.ids:
            self.close()
            self._open()
        self.offset += 1
        record = SourceRecord(OPS, 0, self.offset, key, value)
        result = self.writer.write_batch([record])
        assert result.records == 1
        if result.dead_lettered:
            assert result.stored == {"dead_letters": 1}  # exactly one, and nothing else
            return "refused", self.writer._decode(record)[2]  # the sink's own dead letter
        assert result.stored == {"operations": 1}
        if event_id is not None:
            self.ids.add(event_id)
        return "stored", self.writer._decode(record)[2]


_SINK: _Sink | None = None


def _sink() -> _Sink:
    global _SINK
    if _SINK is None:
        _SINK = _Sink()
    return _SINK


@pytest.fixture(autouse=True, scope="module")
def _close_the_sink() -> Iterator[None]:
    """The shared ledger (one for the whole hypothesis run) is removed when the module ends."""
    global _SINK
    yield
    if _SINK is not None:
        _SINK.close()
        _SINK = None


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(wire_inputs())
def test_the_worker_and_the_sink_give_the_same_verdict_and_reason(
    data: tuple[bytes, bytes | None],
) -> None:
    value, key = data
    worker = _worker(value, key)
    accepted_id = worker.event_id if isinstance(worker, OperationRecorded) else None
    verdict, event = _sink().verdict(value, key, accepted_id)
    if isinstance(worker, OperationRecorded):
        assert verdict == "stored"
        assert event == worker
    else:
        assert verdict == "refused"
        assert isinstance(event, DeadLettered)
        assert event.reason == worker
        assert base64.b64decode(event.original_b64) == value


def _rebuilt_from_columns(row: dict[str, Any]) -> OperationRecorded:
    data = {k: v for k, v in row.items() if not k.startswith("_") and k != "wire"}
    for name in ("result", "error"):
        if isinstance(data[name], str):
            data[name] = json.loads(data[name])
    event = decode_event_object(data, OperationRecorded)
    assert isinstance(event, OperationRecorded)
    return event


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(operation_docs(), min_size=1, max_size=8, unique_by=lambda d: d["event_id"]))
def test_an_accepted_event_round_trips_wire_columns_export_wire(docs: list[dict[str, Any]]) -> None:
    values = [json.dumps(doc).encode() for doc in docs]
    with tempfile.TemporaryDirectory() as folder:
        ledger, again, out = Path(folder) / "l", Path(folder) / "again", Path(folder) / "out"
        with LedgerWriter(ledger, fsync=False) as writer:
            result = writer.write_batch(
                SourceRecord(OPS, 0, i, doc["correlation_id"].encode(), value)
                for i, (doc, value) in enumerate(zip(docs, values, strict=True))
            )
        assert result.stored == {"operations": len(docs)}
        con = open_reader(ledger)
        cursor = con.execute("SELECT * FROM operations ORDER BY _offset")
        names = [d[0] for d in cursor.description]
        rows = [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]
        con.close()
        for value, row in zip(values, rows, strict=True):
            from_wire = decode_or_reject(value, OperationRecorded)
            assert row["wire"] == value.decode()  # stored as sent
            assert _rebuilt_from_columns(row) == from_wire  # the columns mean what it means
        export_ledger(ledger, out, "ndjson")
        lines = (out / "OperationRecorded.ndjson").read_bytes().splitlines()
        assert lines == values  # exported byte for byte, `type` left out where it was
        ingested = ingest_files(again, [out / "OperationRecorded.ndjson"], fsync=False)
        assert (ingested.stored, ingested.dead_lettered) == ({"operations": len(docs)}, 0)


# --- issue 12, found 1: a typeless operation was paired by the worker, refused by the sink ----


class _Msg:
    def __init__(self, offset: int, key: bytes, value: bytes) -> None:
        self.topic, self.partition, self.offset = OPS, 0, offset
        self.timestamp, self.key, self.value = 1_000.0 + offset * 0.01, key, value


def test_61_typeless_pairs_give_61_comparisons_and_122_stored_operations() -> None:
    from streams.pairing import RuleClassifier

    comparisons: list[bytes] = []
    dead: list[bytes] = []

    async def send_comparison(key: bytes, value: bytes, *, partition: int) -> None:
        comparisons.append(value)

    async def send_dead(key: bytes | None, value: bytes) -> None:
        dead.append(value)

    async def send_tick(partition: int, value: bytes) -> None:
        return None

    agent = PairingAgent(
        table={},
        classifier=RuleClassifier(),
        metrics=Metrics(),
        ticks_topic="t.ledger.pairing-ticks",
        timeout=30.0,
        keep_for=600.0,
        send_comparison=send_comparison,
        send_dead_letter=send_dead,
        send_tick=send_tick,
        caught_up=lambda partition, next_offset: True,
        wall=lambda: 2_000.0,
    )
    messages = []
    for i in range(61):
        for pool in ("v1", "v2"):
            doc = {
                "event_id": f"op-{i}-{pool}",
                "correlation_id": f"c-{i}",
                "session_id": None,
                "pool": pool,
                "role": "primary" if pool == "v1" else "shadow",
                "operation": "quote",
                "outcome": "ok",
                "result": {"n": i},
                "started_at": "2026-03-01T10:00:00Z",
                "duration_ms": 1.0,
            }
            messages.append(_Msg(len(messages), f"c-{i}".encode(), json.dumps(doc).encode()))

    async def feed() -> None:
        for message in messages:
            await agent.handle(message)

    asyncio.run(feed())
    assert (len(comparisons), len(dead)) == (61, 0)
    with tempfile.TemporaryDirectory() as folder, LedgerWriter(Path(folder) / "l") as writer:
        stored = writer.write_batch(
            [SourceRecord(OPS, 0, m.offset, m.key, m.value) for m in messages]
            + [
                SourceRecord("t.ledger.comparisons", 0, i, None, value)
                for i, value in enumerate(comparisons)
            ]
        )
    assert stored.stored == {"operations": 122, "comparisons": 61}
    assert all(isinstance(decode_event(v), ComparisonRecorded) for v in comparisons)
