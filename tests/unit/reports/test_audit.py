"""The audit: SQL and Python recompute every rule the same way; tampering is named by version."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from report_factories import T0, Ledger, records, rewrite, write
from report_flags import RICH_SCRIPT, flag_log, random_decisions

from ledger.events import encode_event
from reports.audit import audit

SPAN_DAYS = 2


@pytest.fixture(scope="module")
def rich(tmp_path_factory: pytest.TempPathFactory) -> tuple[Ledger, Path]:
    """Decisions under every rule (overrides, disabled, split, circuit open, anonymous)."""
    from datetime import timedelta

    span = timedelta(days=SPAN_DAYS)
    changes = flag_log(T0, span, RICH_SCRIPT)
    ledger = Ledger(flag_changes=changes, decisions=random_decisions(changes, T0, span, 3000))
    return ledger, write(tmp_path_factory.mktemp("audit") / "ledger", ledger)


@pytest.fixture
def copy(rich: tuple[Ledger, Path], tmp_path: Path) -> Path:
    """A private copy of the rich ledger, to tamper with."""
    import shutil

    return Path(shutil.copytree(rich[1], tmp_path / "ledger"))


def reader(path: Path) -> Iterator[Any]:
    from ledger.store import open_reader

    con = open_reader(path)
    try:
        yield con
    finally:
        con.close()


def run_audit(path: Path, sample: int = 10_000) -> Any:
    for con in reader(path):
        return audit(con, sample=sample, seed=1)
    raise AssertionError("unreachable")


def test_every_rule_is_exercised_by_the_rich_ledger(rich: tuple[Ledger, Path]) -> None:
    reasons = {str(d.reason) for d in rich[0].decisions}
    assert reasons == {
        "ENVIRONMENT_OVERRIDE",
        "SESSION_OVERRIDE",
        "DISABLED",
        "SPLIT",
        "CIRCUIT_OPEN",
    }
    assert any(d.session_id is None for d in rich[0].decisions)


def test_an_untouched_ledger_audits_clean_in_sql_and_in_python(rich: tuple[Ledger, Path]) -> None:
    ledger, path = rich
    result = run_audit(path)
    assert result.decisions == len(ledger.decisions)
    assert result.disagreeing == 0
    assert result.sample_size == len(ledger.decisions)  # every one replayed in Python too
    assert result.sample_disagreeing == 0
    assert result.implementations_disagree == []
    assert result.chain_ok
    assert result.ok
    assert {c.read_from for c in result.chains} == {"wire", "columns"}


def test_the_audit_counts_decisions_per_flag_version(rich: tuple[Ledger, Path]) -> None:
    ledger, path = rich
    result = run_audit(path, sample=0)
    expected: dict[tuple[str, int], int] = {}
    for d in ledger.decisions:
        expected[(d.flag, d.flag_version)] = expected.get((d.flag, d.flag_version), 0) + 1
    assert {key: n for key, (n, _) in result.by_version.items()} == expected


WIRE_PATCH = "json_merge_patch(wire, json_object({field!r}, {value}))"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("v2_rollout_bp", "v2_rollout_bp + 100"),
        ("reason", "'approved by nobody'"),
    ],
)
@pytest.mark.parametrize("where", ["columns", "wire", "both"])
def test_a_flag_event_changed_in_a_parquet_segment_fails_the_audit_naming_its_version(
    rich: tuple[Ledger, Path], copy: Path, field: str, value: str, where: str
) -> None:
    target = next(c for c in rich[0].flag_changes if c.command == "set_percentage")
    cond = f"version = {target.version}"
    replaced = []
    if where in ("columns", "both"):
        replaced.append(f"CASE WHEN {cond} THEN {value} ELSE {field} END AS {field}")
    if where in ("wire", "both"):
        patch = WIRE_PATCH.format(field=field, value=value)
        replaced.append(f"CASE WHEN {cond} THEN CAST({patch} AS VARCHAR) ELSE wire END AS wire")
    assert rewrite(copy, "flag_events", f"SELECT * REPLACE ({', '.join(replaced)}) FROM t")
    result = run_audit(copy, sample=200)
    assert not result.ok
    assert not result.chain_ok
    assert ("v2_migration", target.version) in result.bad_versions()
    broken = [c for c in result.chains if not c.ok]
    assert broken
    assert all(c.bad_version == target.version for c in broken)


def test_a_decision_rewritten_in_storage_is_found_by_sql_and_by_python(
    rich: tuple[Ledger, Path], copy: Path
) -> None:
    victim = next(d for d in rich[0].decisions if str(d.reason) == "SPLIT")
    flipped = "v1" if victim.pool == "v2" else "v2"
    rewrite(
        copy,
        "decisions",
        f"SELECT * REPLACE ("
        f"CASE WHEN event_id = '{victim.event_id}' THEN '{flipped}' ELSE pool END AS pool, "
        f"CASE WHEN event_id = '{victim.event_id}' "
        f'THEN CAST(json_merge_patch(wire, \'{{"pool": "{flipped}"}}\') AS VARCHAR) '
        f"ELSE wire END AS wire) FROM t",
    )
    result = run_audit(copy)
    assert result.disagreeing == 1
    assert result.sample_disagreeing == 1
    assert result.implementations_disagree == []
    (example,) = result.examples
    assert example.event_id == victim.event_id
    assert example.fields == ("pool",)
    assert result.bad_versions() == [("v2_migration", victim.flag_version)]
    assert result.chain_ok  # the flag log itself is fine


@pytest.mark.parametrize(
    ("column", "change"),
    [
        ("pool", "CASE WHEN pool = 'v1' THEN 'v2' ELSE 'v1' END"),
        ("reason", "CASE WHEN reason = 'SPLIT' THEN 'DISABLED' ELSE 'SPLIT' END"),
        ("bucket", "(bucket + 1) % 10000"),
        ("threshold_bp", "threshold_bp + 1"),
        ("flag_version", "flag_version + 100"),
        ("hash_version", "1"),
        ("hash_version", "3"),
        ("bucket", "NULL"),
    ],
)
def test_sql_and_python_flag_exactly_the_decisions_that_were_changed(
    rich: tuple[Ledger, Path], copy: Path, column: str, change: str
) -> None:
    victims = [d.event_id for d in rich[0].decisions[::97]]
    ids = ", ".join(f"'{v}'" for v in victims)
    patch = f"json_object('{column}', {change})"
    rewrite(
        copy,
        "decisions",
        f"SELECT * REPLACE ("
        f"CASE WHEN event_id IN ({ids}) THEN {change} ELSE {column} END AS {column}, "
        f"CASE WHEN event_id IN ({ids}) THEN CAST(json_merge_patch(wire, {patch}) AS VARCHAR) "
        f"ELSE wire END AS wire) FROM t",
    )
    result = run_audit(copy)
    assert result.disagreeing == len(victims)
    assert result.sample_disagreeing == len(victims)
    assert result.implementations_disagree == []
    listed = {e.event_id for e in [*result.examples, *result.sample_examples]}
    assert listed <= set(victims)
    assert len(result.examples) == min(len(victims), 20)


def test_a_tampered_export_ingested_elsewhere_fails_the_audit_naming_its_version(
    rich: tuple[Ledger, Path], tmp_path: Path
) -> None:
    from ledger.store import export_ledger, ingest_files

    out = tmp_path / "export"
    export_ledger(rich[1], out, "ndjson")
    target = rich[0].flag_changes[2]
    lines = (out / "FlagChanged.ndjson").read_text().splitlines()
    changed = []
    for line in lines:
        event = json.loads(line)
        if event["version"] == target.version:
            event["v2_rollout_bp"] += 1  # a changed percentage: 12.34 % -> 12.35 %
        changed.append(json.dumps(event))
    (out / "FlagChanged.ndjson").write_text("\n".join(changed) + "\n")
    elsewhere = tmp_path / "audit-machine"
    ingest_files(elsewhere, [out], fsync=False)
    result = run_audit(elsewhere, sample=100)
    assert not result.ok
    assert ("v2_migration", target.version) in result.bad_versions()
    assert all(c.bad_version == target.version for c in result.chains if not c.ok)


def test_an_untampered_export_ingested_elsewhere_audits_clean(
    rich: tuple[Ledger, Path], tmp_path: Path
) -> None:
    from ledger.store import export_ledger, ingest_files

    export_ledger(rich[1], tmp_path / "export", "ndjson")
    ingest_files(tmp_path / "elsewhere", [tmp_path / "export"], fsync=False)
    result = run_audit(tmp_path / "elsewhere", sample=100)
    assert result.ok
    assert result.decisions == len(rich[0].decisions)


def test_removing_the_last_flag_change_is_caught_by_a_later_rejection(tmp_path: Path) -> None:
    """The chain alone cannot show a removed tail; decisions made at the lost version can."""
    from datetime import timedelta

    span = timedelta(days=1)
    changes = flag_log(T0, span, RICH_SCRIPT[:4])
    decisions = random_decisions(changes, T0, span, 200)
    assert any(d.flag_version == changes[-1].version for d in decisions)
    path = tmp_path / "ledger"
    from ledger.store import LedgerWriter

    with LedgerWriter(path, fsync=False) as writer:
        writer.write_batch(records([*changes[:-1], *decisions]))
    result = run_audit(path, sample=50)
    assert not result.ok
    lost = changes[-1].version
    assert ("v2_migration", lost) in result.bad_versions()
    assert any("not in the flag log" in f for e in result.examples for f in e.fields)


def test_a_ledger_without_decisions_or_flag_changes_audits_clean(tmp_path: Path) -> None:
    path = write(tmp_path / "ledger", Ledger())
    result = run_audit(path)
    assert result.ok
    assert result.decisions == 0
    assert result.chains == []


def test_the_audit_summary_names_the_broken_version(rich: tuple[Ledger, Path], copy: Path) -> None:
    from reports.audit import render_audit

    target = rich[0].flag_changes[4]
    rewrite(
        copy,
        "flag_events",
        f"SELECT * REPLACE (CASE WHEN version = {target.version} THEN 'someone else' "
        "ELSE actor END AS actor) FROM t",
    )
    text = render_audit(run_audit(copy, sample=10))
    assert f"AUDIT FAILED at v2_migration version {target.version}" in text
    document = json.loads(render_audit(run_audit(copy, sample=10), "json"))
    assert document["ok"] is False
    assert {"flag": "v2_migration", "version": target.version} in document["bad_versions"]


def test_decisions_encode_as_the_routers_publish_them(rich: tuple[Ledger, Path]) -> None:
    """The rich ledger's decisions round-trip through the wire form unchanged (sanity)."""
    from ledger.events import decode_event

    for decision in rich[0].decisions[:50]:
        assert decode_event(encode_event(decision)) == decision
