"""The incremental audit (kept verdicts) agrees with the full one, clean and tampered."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from report_factories import T0, Ledger, build, records, rewrite

from ledger.store import LedgerWriter, open_reader
from reports.audit import AuditResult, audit
from reports.kept_verdicts import incremental_audit
from reports.queries import scope

SPAN_S = 3000


@pytest.fixture(scope="module")
def dense() -> Ledger:
    return build(seed=5, pairs=500, days=SPAN_S / 86_400)


@pytest.fixture(scope="module")
def clean(dense: Ledger, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("verdicts") / "ledger"
    items = records(dense.events(), dense.garbage)
    with LedgerWriter(path, fsync=False) as writer:
        for at in range(0, len(items), 97):
            writer.write_batch(items[at : at + 97])
    return path


def both(path: Path, since: Any = None, until: Any = None) -> tuple[AuditResult, AuditResult]:
    con = open_reader(path)
    try:
        scope(con, since, until)
        kept = incremental_audit(con, since=since, until=until, sample=20, seed=1)
        full = audit(con, sample=20, seed=1, source="scoped_decisions")
    finally:
        con.close()
    return kept, full


def assert_agree(kept: AuditResult, full: AuditResult) -> None:
    assert kept.decisions == full.decisions
    assert kept.disagreeing == full.disagreeing
    assert kept.by_version == full.by_version
    assert kept.chain_ok == full.chain_ok
    assert (kept.disagreeing == 0) == (full.disagreeing == 0)
    assert [d.event_id for d in kept.examples] == [d.event_id for d in full.examples]


def test_clean_ledger_agrees_and_keeps_verdicts(clean: Path) -> None:
    kept, full = both(clean)
    assert_agree(kept, full)
    assert kept.ok
    assert full.ok
    assert kept.decisions > 0
    assert list((clean / "verdicts").glob("*.parquet"))
    kept_again, _ = both(clean)  # read back from the kept verdicts
    assert_agree(kept_again, full)


@settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(start=st.integers(-60, SPAN_S), length=st.integers(1, SPAN_S))
def test_windows_agree(clean: Path, start: int, length: int) -> None:
    since = T0 + timedelta(seconds=start, milliseconds=250)
    kept, full = both(clean, since, since + timedelta(seconds=length))
    assert_agree(kept, full)


@pytest.mark.parametrize(
    ("table", "select"),
    [
        # A decision's recorded pool changed in the Parquet file.
        (
            "decisions",
            "SELECT * REPLACE (CASE WHEN hash(event_id) % 7 = 0 THEN "
            "(CASE WHEN pool = 'v1' THEN 'v2' ELSE 'v1' END) ELSE pool END AS pool) FROM t",
        ),
        # The flag log's split changed: every decision of the changed versions is suspect.
        ("flag_events", "SELECT * REPLACE (v2_rollout_bp + 700 AS v2_rollout_bp) FROM t"),
    ],
)
def test_tampered_ledger_agrees_after_verdicts_were_kept(
    clean: Path, tmp_path: Path, table: str, select: str
) -> None:
    path = tmp_path / "ledger"
    shutil.copytree(clean, path)
    assert_agree(*both(path))  # verdicts kept while clean
    assert rewrite(path, table, select) > 0
    kept, full = both(path)
    assert full.disagreeing > 0
    assert_agree(kept, full)
    assert not kept.ok
