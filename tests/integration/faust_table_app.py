"""A minimal faust app with a table, run as a real worker by test_broker_roundtrips.py.

Every word (the message key) on the source topic is counted in the ``counts`` table and the new
count is sent to the totals topic. After a restart the first total must continue from the old
count, which only happens if the table was rebuilt from its changelog topic on the broker.
Configured from the environment so each test run has its own app id, topics and data dir.
"""

from __future__ import annotations

import os

import faust

app = faust.App(
    os.environ["FAUST_TABLE_TEST_APP_ID"],
    broker=f"kafka://{os.environ['FAUST_TABLE_TEST_BOOTSTRAP']}",
    datadir=os.environ["FAUST_TABLE_TEST_DATADIR"],
    store="memory://",  # no local state: a restart must recover the table from the changelog
    topic_partitions=1,
    topic_replication_factor=1,
    table_standby_replicas=0,
    consumer_auto_offset_reset="earliest",
    broker_commit_every=1,
    broker_commit_interval=0.2,
    web_enabled=False,
)
words = app.topic(
    os.environ["FAUST_TABLE_TEST_SOURCE"], key_type=bytes, value_serializer="raw", partitions=1
)
totals = app.topic(
    os.environ["FAUST_TABLE_TEST_TOTALS"], key_type=bytes, value_serializer="raw", partitions=1
)
# Serializers are explicit: left to defaults, the changelog is written with the app's raw key
# serializer but read back as JSON during recovery, and the restored table comes up empty.
counts = app.Table(
    "counts",
    default=int,
    partitions=1,
    schema=faust.Schema(
        key_type=str, value_type=int, key_serializer="json", value_serializer="json"
    ),
)


@app.agent(words)
async def count(stream: faust.StreamT[bytes]) -> None:
    async for event in stream.events():
        word = event.key.decode()
        counts[word] += 1
        await totals.send(key=event.key, value=str(counts[word]).encode())
