"""Rollup-backed reports equal the raw-row reports, whatever the window and the ledger's past.

The ledgers: the report factories' events written in many small batches (minutes split
across segments), then compacted; with rollups lost (a crash between a segment and its
rollups, or a ledger older than rollups) and backfilled; and exported then ingested.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Iterator
from dataclasses import fields, is_dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from report_factories import T0, Ledger, build, records

from ledger.store import LedgerWriter, export_ledger, ingest_files, open_reader
from reports.catalog import ReportOptions, build_report

#: A dense ledger: 900 pairs over 3 hours (five a minute), so nearly every minute edge of a
#: window has rows on both sides, and windows hold whole hours and parts of hours.
SPAN_S = 3 * 3600
#: The reports that read the rollups (the others read raw tables only).
REPORTS = ("summary", "performance", "rollout", "go-no-go", "daily")
#: Means are float sums divided by counts: summed in another order they may round apart.
ROUNDED_MEANS = {"mean_ms", "cpu_ms_mean"}


def _write_in_batches(path: Path, ledger: Ledger, seed: int) -> Path:
    rng = random.Random(seed)
    items = records(ledger.events(), ledger.garbage)
    with LedgerWriter(path, fsync=False) as writer:
        at = 0
        while at < len(items):
            size = rng.randint(20, 120)
            writer.write_batch(items[at : at + size])
            at += size
    return path


def _drop_rollups(path: Path, seed: int) -> int:
    """Remove rollup files as a crash before (or during) their writing would leave them."""
    rng = random.Random(seed)
    dropped = 0
    for folder in sorted(path.glob("segments/*+*")):
        choice = rng.random()
        if choice < 0.3:
            for file in folder.glob("rollup.*.parquet"):
                file.unlink()
            dropped += 1
        elif choice < 0.5:
            # Half a table's rollups: latency written, the operations marker not yet.
            (folder / "rollup.operations.parquet").unlink(missing_ok=True)
            dropped += 1
    return dropped


@pytest.fixture(scope="module")
def dense() -> Ledger:
    return build(seed=11, pairs=900, days=SPAN_S / 86_400)


@pytest.fixture(scope="module")
def ledgers(dense: Ledger, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    built = dense
    root = tmp_path_factory.mktemp("rollups")
    out: dict[str, Path] = {}
    out["batches"] = _write_in_batches(root / "batches", built, 1)

    compacted = _write_in_batches(root / "compacted", built, 2)
    with LedgerWriter(compacted, fsync=False, grace_s=0) as writer:
        writer.compact(target_rows=400, fanout=3)
    out["compacted"] = compacted

    crashed = _write_in_batches(root / "crashed", built, 3)
    assert _drop_rollups(crashed, 3) > 0
    out["crashed"] = crashed

    backfilled = root / "backfilled"
    shutil.copytree(crashed, backfilled)
    with LedgerWriter(backfilled, fsync=False) as writer:
        assert writer.backfill_rollups() > 0
    out["backfilled"] = backfilled

    exported = root / "export"
    export_ledger(compacted, exported, fmt="parquet")
    out["ingested"] = root / "ingested"
    ingest_files(out["ingested"], [exported], fsync=False)
    return out


@pytest.fixture(scope="module")
def connections(ledgers: dict[str, Path]) -> Iterator[dict[str, Any]]:
    cons = {name: open_reader(path) for name, path in ledgers.items()}
    yield cons
    for con in cons.values():
        con.close()


def _same(a: Any, b: Any, column: str = "") -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= (0.0100001 if column in ROUNDED_MEANS else 1e-9 * max(abs(a), 1))
    if isinstance(a, tuple | list) and isinstance(b, tuple | list):
        return len(a) == len(b) and all(_same(x, y, column) for x, y in zip(a, b, strict=True))
    if is_dataclass(a) and is_dataclass(b) and not isinstance(a, type):
        return type(a) is type(b) and all(
            _same(getattr(a, f.name), getattr(b, f.name), column) for f in fields(a)
        )
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k], column) for k in a)
    return bool(a == b)


def assert_same_report(con: Any, name: str, options: ReportOptions) -> None:
    rolled = build_report(con, name, options)
    raw = build_report(con, name, replace(options, rollups=False))
    assert [s.name for s in rolled.sections] == [s.name for s in raw.sections]
    for mine, theirs in zip(rolled.sections, raw.sections, strict=True):
        assert mine.columns == theirs.columns, name
        assert len(mine.rows) == len(theirs.rows), (name, mine.name)
        for row_a, row_b in zip(mine.rows, theirs.rows, strict=True):
            for column, a, b in zip(mine.columns, row_a, row_b, strict=True):
                assert _same(a, b, column), (name, mine.name, column, a, b)
    assert _same(rolled.charts, raw.charts), name
    assert rolled.passed == raw.passed
    assert rolled.meta == raw.meta


windows = st.tuples(
    st.one_of(st.none(), st.integers(-120, SPAN_S + 120)),
    st.one_of(st.none(), st.integers(1, SPAN_S + 240)),
    st.sampled_from([None, "1 hour", "2 hours", "15 minutes", "1 minute", "30 seconds", "1 day"]),
)


@pytest.mark.parametrize("ledger", ["batches", "compacted", "crashed", "backfilled", "ingested"])
@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(window=windows)
def test_rollup_reports_equal_raw_reports(
    connections: dict[str, Any], ledger: str, window: tuple[int | None, int | None, str | None]
) -> None:
    since_s, length_s, interval = window
    since = None if since_s is None else T0 + timedelta(seconds=since_s, milliseconds=137)
    until = None
    if length_s is not None:
        until = (since or T0) + timedelta(seconds=length_s)
    options = ReportOptions(since=since, until=until, interval=interval, audit_sample=5)
    for name in REPORTS:
        assert_same_report(connections[ledger], name, options)


def test_whole_ledger_reports_equal_raw_on_every_ledger(connections: dict[str, Any]) -> None:
    for con in connections.values():
        for name in REPORTS:
            assert_same_report(con, name, ReportOptions())


def test_rollups_cover_every_row_once(ledgers: dict[str, Path], dense: Ledger) -> None:
    built = dense
    """Counts through the rollups equal the events, on every ledger (no row twice or missed)."""
    for path in ledgers.values():
        con = open_reader(path)
        try:
            con.execute("SET TimeZone = 'UTC'")
            from reports.queries import scope

            scope(con)
            ops = con.sql("SELECT sum(n) FROM agg_operations").fetchall()[0][0]
            cmps = con.sql("SELECT sum(n) FROM agg_comparisons").fetchall()[0][0]
            decs = con.sql("SELECT sum(n) FROM agg_decisions").fetchall()[0][0]
            bins = con.sql("SELECT sum(n) FROM agg_latency").fetchall()[0][0]
        finally:
            con.close()
        assert (ops, cmps, decs, bins) == (
            len(built.operations),
            len(built.comparisons),
            len(built.decisions),
            len(built.operations),
        ), path.name


def test_crashed_ledger_reads_some_segments_raw(ledgers: dict[str, Path]) -> None:
    con = open_reader(ledgers["crashed"])
    try:
        raw = con.sql("SELECT count(*) FROM operations_unrolled").fetchall()[0][0]
    finally:
        con.close()
    assert raw > 0
    con = open_reader(ledgers["backfilled"])
    try:
        raw = con.sql("SELECT count(*) FROM operations_unrolled").fetchall()[0][0]
    finally:
        con.close()
    assert raw == 0


def test_windows_inside_one_minute_and_on_minute_edges(connections: dict[str, Any]) -> None:
    con = connections["compacted"]
    for since, until in (
        (T0 + timedelta(minutes=30, seconds=5), T0 + timedelta(minutes=30, seconds=50)),
        (T0 + timedelta(minutes=30), T0 + timedelta(minutes=41)),
        (T0 + timedelta(minutes=12, seconds=17), T0 + timedelta(minutes=44, seconds=3)),
        (T0 + timedelta(minutes=12, seconds=17), T0 + timedelta(hours=2, minutes=44)),
        (T0 + timedelta(minutes=59, seconds=30), T0 + timedelta(hours=2, seconds=30)),
        (T0 + timedelta(hours=1), T0 + timedelta(hours=2)),
        (T0 + timedelta(minutes=30, seconds=1), T0 + timedelta(minutes=31)),
        (T0 + timedelta(minutes=30, seconds=59), T0 + timedelta(minutes=31, seconds=1)),
    ):
        for name in REPORTS:
            assert_same_report(con, name, ReportOptions(since=since, until=until, audit_sample=5))


def test_latest_decision_of_a_session_on_every_ledger(
    connections: dict[str, Any], dense: Ledger
) -> None:
    """``replay --session S`` (latest) through ``rollup_latest`` and the unrolled segments."""
    from reports.explain import find_decision

    newest: dict[str, Any] = {}
    for decision in dense.decisions:
        best = newest.get(decision.session_id)
        if best is None or (decision.at, decision.event_id) > (best.at, best.event_id):
            newest[decision.session_id] = decision
    assert len(newest) > 10
    for name, con in connections.items():
        for session, decision in sorted(newest.items()):
            assert find_decision(con, session_id=session) == decision, (name, session)
