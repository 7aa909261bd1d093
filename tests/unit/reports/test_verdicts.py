"""``report verdicts``: each switchover step beside the gate verdicts it cites, from the store."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from pydantic import JsonValue
from report_factories import FLAG, T0, records

from ledger.events import GateVerdict, SwitchoverRecorded
from ledger.store import LedgerWriter, open_reader
from reports.catalog import ReportOptions, build_report


def _verdict(
    event_id: str, gate: str, *, passed: bool, e_value: float | None = None
) -> GateVerdict:
    return GateVerdict(
        event_id=event_id,
        flag=FLAG,
        gate=gate,
        passed=passed,
        test="mixture_sprt" if e_value is not None else "threshold",
        e_value=e_value,
        p_value=None if e_value is None else min(1.0, 1 / e_value),
        threshold=200.0 if e_value is not None else None,
        v1_n=3000,
        v1_events=30,
        v2_n=3000,
        v2_events=90,
        windows=(T0, T0 + timedelta(minutes=1)),
        stage=1,
        at=T0 + timedelta(minutes=2),
    )


def _step(
    event_id: str, action: str, *, cause: str | None = None, cited: list[JsonValue]
) -> SwitchoverRecorded:
    return SwitchoverRecorded(
        event_id=event_id,
        flag=FLAG,
        action=action,
        stage=1,
        percentage_bp=1000,
        actor="switchover-controller",
        reason=action,
        cause_id=cause,
        gates={"verdict_ids": cited},
        at=T0 + timedelta(minutes=2 if action == "advanced" else 3),
    )


def test_each_step_lists_the_verdicts_it_cites_and_no_other(tmp_path: Path) -> None:
    events = [
        _step("s-1", "advanced", cited=["v-samples", "v-mismatch"]),
        _verdict("v-samples", "samples", passed=True),
        _verdict("v-mismatch", "mismatch_rate", passed=True),
        _step("s-2", "rolled_back", cause="v-errors", cited=["v-errors"]),
        _verdict("v-errors", "sequential_error_rate", passed=False, e_value=512.0),
        _verdict("v-orphan", "judge", passed=True),  # cited by nothing: not shown
    ]
    path = tmp_path / "ledger"
    with LedgerWriter(path, fsync=False) as writer:
        writer.write_batch(records(events))
    con = open_reader(path)
    try:
        rows = build_report(con, "verdicts", ReportOptions()).section("verdicts").records()
    finally:
        con.close()
    assert [(r["action"], r["gate"], r["passed"]) for r in rows] == [
        ("advanced", "mismatch_rate", True),
        ("advanced", "samples", True),
        ("rolled_back", "sequential_error_rate", False),
    ]
    proof = rows[-1]
    assert (proof["e_value"], proof["p_value"], proof["threshold"]) == (512.0, 1 / 512, 200.0)
    assert (proof["v1_events"], proof["v2_events"], proof["windows"]) == (30, 90, 2)
