"""The pairing agent wired into a real faust app, driven through ``Agent.test_context``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from stream_factories import half, recording_producer

from ledger.events import ComparisonRecorded, decode_event, encode_event
from ledger.pairing import Decided, decode_slot
from ledger.settings import Settings
from streams.app import create_app


def test_pairing_agent_writes_its_table_changelog_and_publishes_one_comparison(
    settings: Settings, tmp_path: Path
) -> None:
    ledger = create_app(
        settings,
        app_id="unit-pairing",
        web_enabled=False,
        modules=("streams.metrics", "streams.pairing"),
        datadir=tmp_path,
    )
    producer = recording_producer(ledger.app)
    ledger.app.producer = producer

    async def run() -> None:
        async with ledger.agents["pairing"].test_context() as agent:
            for n, pool in enumerate(["v2", "v2", "v1"]):  # the shadow first, and retried
                value = encode_event(half("cid-1", pool))
                await agent.put(value, key=b"cid-1", partition=3, timestamp=1_000.0 + n)

    asyncio.run(run())

    comparisons = producer.of(settings.topic("comparisons"))
    assert [key for key, _, _ in comparisons] == [b"cid-1"]
    event = decode_event(comparisons[0][1] or b"")
    assert isinstance(event, ComparisonRecorded)
    assert event.category == "match"
    changelog = producer.of("unit-pairing-pairing-changelog")
    assert {partition for _, _, partition in changelog} == {3}  # co-partitioned with the input
    last_key, last_value, _ = changelog[-1]
    assert last_key == b"cid-1"
    assert isinstance(decode_slot(last_value or b""), Decided)
    outcomes: Any = ledger.metrics.pairing
    assert outcomes.labels("duplicate")._value.get() == 1
