"""The stream processors on the real broker: a messy stream in, one comparison per pair out."""

from __future__ import annotations

import base64
import time
from collections import Counter
from pathlib import Path

from pipeline_support import TopicReader, Worker, messy_stream, percentage_command, publish

from ledger import flags
from ledger.events import FlagChanged
from ledger.kafka.admin import ensure_topics
from ledger.kafka.flag_commands import read_log
from ledger.settings import Settings

#: Enough pairs for every kind of mess (10 missing shadows, 10 malformed inputs, two of each
#: kind, about 40 retried duplicates) and a kill a quarter of the way through. What a larger
#: stream adds is time, not behaviour; the same scenario at 10,000 pairs and more is
#: ``bench/messy_stream.py``.
PAIRS = 1_000
#: Pairs 10 ms apart in event time: the stream spans 10 s, longer than the pairing timeout,
#: so missing shadows time out on stream time as well as on the worker's ticks at the end
#: (what 10,000 pairs 1 ms apart gave).
STEP_MS = 10
PAIRING_TIMEOUT = 3.0


def test_messy_stream_gives_exactly_one_comparison_per_correlation_id(
    settings: Settings, tmp_path: Path
) -> None:
    ensure_topics(settings)
    stream = messy_stream(PAIRS, step_ms=STEP_MS)
    worker = Worker(settings, tmp_path, pairing_timeout=PAIRING_TIMEOUT)
    comparisons = TopicReader(settings.bootstrap_servers, settings.topic("comparisons"))
    dead = TopicReader(settings.bootstrap_servers, settings.topic("dead_letters"))
    worker.start()
    try:
        publish(settings.bootstrap_servers, settings.topic("operations"), stream.messages)
        comparisons.until(lambda: len(comparisons.values) >= PAIRS, timeout=300, worker=worker)
        dead.until(lambda: len(dead.values) >= len(stream.malformed), timeout=30, worker=worker)
        comparisons.poll(2 * PAIRING_TIMEOUT)  # nothing more may follow
        dead.poll(0.5)
        assert worker.stop() == 0
    finally:
        worker.stop()
        comparisons.close()
        dead.close()

    got = {value["correlation_id"]: value["category"] for value in comparisons.values}
    assert len(comparisons.values) == PAIRS  # not one comparison twice
    assert got == stream.expected
    counts = Counter(got.values())
    assert counts["shadow_missing"] == round(PAIRS * 0.01)
    assert all(value["comparison_id"].startswith("cmp-") for value in comparisons.values)
    originals = {base64.b64decode(value["original_b64"]) for value in dead.values}
    assert originals == stream.malformed
    assert all(value["reason"] for value in dead.values)


def test_worker_killed_mid_stream_and_restarted_still_gives_one_comparison_each(
    settings: Settings, tmp_path: Path
) -> None:
    ensure_topics(settings)
    stream = messy_stream(PAIRS, seed=11, step_ms=STEP_MS)
    commands = [  # published around the kill: the worker must keep running under them
        (settings.flag.encode(), percentage_command(settings.flag, f"ramp-{n}", 100 * (n + 1)))
        for n in range(20)
    ]
    worker = Worker(settings, tmp_path, pairing_timeout=PAIRING_TIMEOUT)
    comparisons = TopicReader(settings.bootstrap_servers, settings.topic("comparisons"))
    dead = TopicReader(settings.bootstrap_servers, settings.topic("dead_letters"))
    worker.start()
    try:
        publish(settings.bootstrap_servers, settings.topic("flag_commands"), commands[:10])
        publish(settings.bootstrap_servers, settings.topic("operations"), stream.messages)
        comparisons.until(lambda: len(comparisons.values) >= PAIRS // 4, timeout=240, worker=worker)
        worker.kill()
        killed_at = len(comparisons.values)
        worker.start()
        publish(settings.bootstrap_servers, settings.topic("flag_commands"), commands[10:])

        def distinct() -> int:
            return len({value["comparison_id"] for value in comparisons.values})

        comparisons.until(lambda: distinct() >= PAIRS, timeout=300, worker=worker)
        deadline = time.monotonic() + 60  # every command sent around the kill is answered
        while len(read_log(settings)) < len(commands):
            worker.assert_running()
            assert time.monotonic() < deadline, worker.tail()
            time.sleep(0.5)
        dead.until(
            lambda: len({v["event_id"] for v in dead.values}) >= len(stream.malformed),
            timeout=30,
            worker=worker,
        )
        comparisons.poll(2 * PAIRING_TIMEOUT)
        assert worker.stop() == 0
    finally:
        worker.stop()
        comparisons.close()
        dead.close()

    assert killed_at < PAIRS  # the kill really came mid-stream
    categories: dict[str, set[tuple[str, str]]] = {}
    for value in comparisons.values:
        categories.setdefault(value["comparison_id"], set()).add(
            (value["correlation_id"], value["category"])
        )
    assert all(len(copies) == 1 for copies in categories.values())  # copies are the same
    got = {cid: category for copies in categories.values() for cid, category in copies}
    assert got == stream.expected
    originals = {base64.b64decode(value["original_b64"]) for value in dead.values}
    assert originals == stream.malformed

    log = read_log(settings)  # a gapless chain: each command answered once, versions 1..20
    assert len({e.command_id for e in log}) == len(log)
    versions = [e.version for e in log if isinstance(e, FlagChanged)]
    assert versions == list(range(1, len(versions) + 1))
    assert {e.command_id for e in log} == {f"ramp-{n}" for n in range(20)}  # each answered
    assert versions == list(range(1, 21))
    assert flags.fold(log, settings.flag).v2_rollout_bp == 2_000
