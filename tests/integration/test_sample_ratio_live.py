"""A skewed router trips the sample-ratio check, through the broker (issue 15).

Two flags share one run. Decisions of ``sound`` are the real router's (``ledger.rollout``);
``skewed``'s come from a router that records the configured 20 % threshold but sends every
session with a bucket below 40 % to V2. Both are published to ``ledger.decisions`` with their
flag logs, stored by ``migration-ledger sink`` (a subprocess), and judged by
``migration-ledger report go-no-go`` as people would run it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from ledger import flags, rollout
from ledger.events import DecisionReason, Event, RolloutDecided
from ledger.settings import Settings

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "unit" / "reports"))
from report_factories import T0
from report_flags import flag_log
from test_reports_live import publish, run, sink, until

__all__ = ["sink"]  # the fixture, imported from the reports' live tests

SESSIONS = 2000
SCRIPT = (
    (0.0, {"command": "enable", "reason": "go"}),
    (0.1, {"command": "set_percentage", "percentage_bp": 2000, "reason": "20 %"}),
)


def decisions(flag: str, *, skew: bool) -> list[RolloutDecided]:
    changes = flag_log(T0, timedelta(hours=1), SCRIPT, flag=flag)
    state = flags.state_at(changes, at=T0 + timedelta(hours=1))
    assert state is not None
    out = []
    for i in range(SESSIONS):
        context = rollout.DecisionContext(f"{flag}-s{i}", f"{flag}-c{i}")
        at = T0 + timedelta(hours=1, milliseconds=10 * i)
        decision = rollout.decide(state, context, at=at, event_id=f"{flag}-d{i}")
        bucket, threshold = decision.bucket or 0, decision.threshold_bp or 0
        if skew and decision.reason == DecisionReason.SPLIT and bucket < 2 * threshold:
            decision = decision.model_copy(update={"pool": "v2"})
        out.append(decision)
    return out


def go_no_go(settings: Settings, flag: str) -> dict[str, dict[str, str]]:
    code, out, err = run(settings, "report", "go-no-go", "-f", "json", "--flag", flag)
    assert code in (0, 1), err
    return {r["check"]: r for r in json.loads(out)["sections"]["checklist"]}


def test_a_skewed_router_fails_the_sample_ratio_gate_and_a_sound_one_passes(
    settings: Settings, sink: subprocess.Popen[bytes]
) -> None:
    events: list[Event] = []
    for flag, skew in (("sound", False), ("skewed", True)):
        events += flag_log(T0, timedelta(hours=1), SCRIPT, flag=flag)
        events += decisions(flag, skew=skew)
    publish(settings, events)

    def stored() -> bool:
        code, out, _ = run(settings, "report", "summary", "-f", "json")
        if code != 0:
            return False
        rows = json.loads(out)["sections"]["overview"]
        return any(r["table"] == "decisions" and r["events"] >= 2 * SESSIONS for r in rows)

    until(stored, 90, "the sink to store every decision")
    assert sink.poll() is None, "the sink died"

    sound = go_no_go(settings, "sound")["sample ratio (decisions)"]
    skewed = go_no_go(settings, "skewed")["sample ratio (decisions)"]
    assert sound["status"] == "PASS", sound
    assert skewed["status"] == "FAIL", skewed
    assert f"of {SESSIONS}" in skewed["figure"]
