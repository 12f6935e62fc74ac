"""A keyed produce/consume round trip on the real broker keeps per-key order."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from gswarm.config import Settings
from gswarm.kafka import topics

N = 10_000
KEYS = 97


async def test_10k_keyed_messages_keep_per_key_order(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory()
    await topics.apply(settings)
    producer = AIOKafkaProducer(bootstrap_servers=settings.broker, linger_ms=5)
    await producer.start()
    try:
        futures = [
            await producer.send(
                settings.tick_topic, key=f"m{i % KEYS}".encode(), value=str(i).encode()
            )
            for i in range(N)
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        settings.tick_topic, bootstrap_servers=settings.broker,
        auto_offset_reset="earliest", enable_auto_commit=False, group_id=None,
    )
    await consumer.start()
    seen: dict[bytes, list[int]] = defaultdict(list)
    partitions: dict[bytes, set[int]] = defaultdict(set)
    try:
        count = 0
        while count < N:
            batch = await asyncio.wait_for(consumer.getmany(timeout_ms=1000), 30)
            for tp, records in batch.items():
                for r in records:
                    assert r.key is not None and r.value is not None
                    seen[r.key].append(int(r.value))
                    partitions[r.key].add(tp.partition)
                    count += 1
    finally:
        await consumer.stop()

    assert sum(len(v) for v in seen.values()) == N
    assert len(seen) == KEYS
    for key, values in seen.items():
        assert values == sorted(values), f"order broken for {key!r}"
        assert len(partitions[key]) == 1, f"{key!r} landed on several partitions"
    assert len({p for ps in partitions.values() for p in ps}) > 1  # keys spread out
