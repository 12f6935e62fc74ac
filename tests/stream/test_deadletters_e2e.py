"""Bad input end to end: every bad message in the dead-letter topic with its reason."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.partitioner import murmur2

from gswarm.config import Settings
from gswarm.runner import WorkerProcess
from tests.core.test_ticks import CASES, GOOD
from tests.stream.conftest import (
    produce_messages,
    records_in,
    set_max_message_bytes,
    wait_consumed,
)

pytestmark = pytest.mark.timeout(300)


def owner(key: bytes, partitions: int) -> int:
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


async def send_misplaced(settings: Settings, n: int) -> None:
    """Messages on a partition their key does not hash to (a foreign partitioner)."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.broker)
    await producer.start()
    try:
        for i in range(n):
            key = b"m-1"
            part = (owner(key, settings.partitions) + 1) % settings.partitions
            await producer.send_and_wait(settings.tick_topic, key=key, partition=part,
                                         value=orjson.dumps({**GOOD, "ts": 10 + i}))
    finally:
        await producer.stop()


async def read_deadletters(settings: Settings, n: int) -> list[tuple[bytes, dict[str, bytes]]]:
    consumer = AIOKafkaConsumer(settings.deadletter_topic, bootstrap_servers=settings.broker,
                                auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    out: list[tuple[bytes, dict[str, bytes]]] = []
    try:
        while len(out) < n:
            batch = await asyncio.wait_for(consumer.getmany(timeout_ms=1000), 30)
            for records in batch.values():
                out += [(r.value, dict(r.headers)) for r in records]
    finally:
        await consumer.stop()
    return out


def test_1000_bad_messages_dead_lettered_with_reasons_good_ones_kept(
    settings_factory: Callable[..., Settings], workers: Callable[..., WorkerProcess]
) -> None:
    from gswarm.kafka import topics
    from gswarm.ports import free_port

    settings = settings_factory(web_port=free_port(), partitions=4, max_message_bytes=4096)
    asyncio.run(topics.apply(settings))
    worker = workers(settings)

    messages: list[tuple[bytes | None, bytes]] = []
    expected: Counter[str] = Counter()
    good = 0
    for i in range(1000):
        value, reason = CASES[i % len(CASES)]
        messages.append((b"m-1", value))
        expected[reason] += 1
        if i % 4 == 0:  # interleave good ticks
            messages.append((b"m-1", orjson.dumps({**GOOD, "ts": 1_000_000 + i})))
            good += 1
    big = orjson.dumps({**GOOD, "trader": "x" * 5000})
    messages += [(b"m-1", big), (b"other", orjson.dumps(GOOD)), (None, orjson.dumps(GOOD))]
    expected.update({"oversized": 1, "key_mismatch": 2})
    # an array with one bad element: the bad one alone is dead-lettered
    arr = [{**GOOD, "ts": 5_000_000}, {**GOOD, "prob": 7}, {**GOOD, "ts": 5_000_001}]
    messages.append((b"m-1", orjson.dumps(arr)))
    expected["prob_out_of_range"] += 1
    good += 2
    sent = asyncio.run(produce_messages(settings, messages))
    asyncio.run(send_misplaced(settings, 5))
    expected["wrong_partition"] += 5
    total_bad = sum(expected.values())

    stats = wait_consumed(worker, sent + 5)
    assert worker.alive()
    assert stats["dead_letters"] == dict(expected)
    assert stats["ticks"] == good
    # exact accounting: every tick offered is a fact, a duplicate, or a dead letter
    assert stats["items"] == stats["ticks"] + stats["duplicates"] + stats["dead_letters_total"]
    assert stats["items"] == sent + 5 + 2  # the array message offered 3 ticks

    letters = asyncio.run(read_deadletters(settings, total_bad))
    assert len(letters) == total_bad
    assert Counter(h["gswarm-reason"].decode() for _, h in letters) == expected
    originals = {v for _, v in messages}
    for value, headers in letters:
        assert headers["gswarm-topic"].decode() == settings.tick_topic
        assert int(headers["gswarm-offset"]) >= 0 and "gswarm-partition" in headers
        if "gswarm-index" in headers:
            assert orjson.loads(value) == arr[int(headers["gswarm-index"])]
        elif headers["gswarm-reason"] != b"wrong_partition":
            assert value in originals  # the original bytes, untouched

    points = worker.get("/api/markets/m-1/history?limit=10000")["points"]
    assert len(points) == good


def test_market_metadata_messages_bad_ones_dead_lettered_good_ones_queryable(
    app_settings: Settings, workers: Callable[..., WorkerProcess]
) -> None:
    from gswarm.core.ticks import CONTROL_HEADER

    settings = app_settings
    worker = workers(settings)
    header = [(CONTROL_HEADER, b"market")]
    good = {"market": "meta-1", "ts": 1_700_000_000_000,
            "meta": {"market/question": "Will it snow?", "market/close_time": 1_800_000_000_000}}
    later = {**good, "ts": 1_700_000_500_000, "meta": {"market/resolution": "NO"}}
    bad = [({**good, "meta": {"market/colour": "red"}}, "bad_metadata"),
           ({**good, "ts": "yesterday"}, "bad_metadata"),
           (good, "wrong_partition")]

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=settings.broker)
        await producer.start()
        try:
            key = b"meta-1"
            right = owner(key, settings.partitions)
            for doc, reason in bad:
                part = right if reason != "wrong_partition" else (right + 1) % settings.partitions
                await producer.send_and_wait(settings.tick_topic, key=key, partition=part,
                                             value=orjson.dumps(doc), headers=header)
            for doc in (good, good, later):  # the repeat changes nothing
                await producer.send_and_wait(settings.tick_topic, key=key, partition=right,
                                             value=orjson.dumps(doc), headers=header)
        finally:
            await producer.stop()

    asyncio.run(send())
    stats = wait_consumed(worker, 6, field="controls")
    assert stats["dead_letters"] == {"bad_metadata": 2, "wrong_partition": 1}
    assert stats["meta_datoms"] == 3  # question, close time, then the resolution
    latest = worker.get("/api/markets/meta-1")
    assert latest["ticks"] == 0 and latest["meta"] == {
        "market/question": "Will it snow?", "market/close_time": 1_800_000_000_000,
        "market/resolution": "NO"}
    before = worker.get(f"/api/markets/meta-1/asof?attr=market/resolution&t={good['ts']}")
    assert before["datom"] is None
    letters = asyncio.run(read_deadletters(settings, 3))
    assert sorted(h["gswarm-reason"].decode() for _, h in letters) == [
        "bad_metadata", "bad_metadata", "wrong_partition"]


def test_a_dead_letter_the_broker_refuses_stops_the_worker_and_comes_again(
    app_settings: Settings, workers: Callable[..., WorkerProcess]
) -> None:
    """A dead letter is never lost: one the broker refuses (the dead-letter topic's
    ``max.message.bytes`` lowered under the worker) stops the worker before any commit
    passes its message; restarted with the limit back, the worker dead-letters it once.

    Before, a send that failed counted as done: the commit after it passed the bad
    message, and its dead letter was gone."""
    worker = workers(app_settings)
    good = [orjson.dumps({**GOOD, "ts": 1_000 + i}) for i in range(20)]
    asyncio.run(produce_messages(app_settings, ((b"m-1", v) for v in good)))
    wait_consumed(worker, len(good))
    topic = app_settings.deadletter_topic
    limit = asyncio.run(set_max_message_bytes(app_settings, topic, "1024"))
    bad = b"{" + b"x" * 3000  # not JSON; its dead letter is over 1024 bytes
    asyncio.run(produce_messages(app_settings, [(b"m-1", bad)]))
    assert worker.proc is not None
    assert worker.proc.wait(60) != 0, "the worker stops on its own, as crashed"
    assert "MessageSizeTooLarge" in worker.log_path.read_text()

    asyncio.run(set_max_message_bytes(app_settings, topic, limit))
    again = workers(app_settings, "w1")  # the same store
    wait_consumed(again, 1)  # the bad message, delivered again (never committed)
    letters = asyncio.run(read_deadletters(app_settings, 1))
    assert [value for value, _ in letters] == [bad]
    assert asyncio.run(records_in(app_settings, topic)) == 1
    assert again.get(f"/api/markets/{GOOD['market']}")["ticks"] == len(good)

