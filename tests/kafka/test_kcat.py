"""kcat (librdkafka) and aiokafka interoperate through the real broker."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Callable

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from gswarm.config import Settings
from gswarm.kafka import topics

KCAT = shutil.which("kcat") or shutil.which("kafkacat")
pytestmark = pytest.mark.skipif(
    KCAT is None, reason="kcat is not installed (apt-get install kcat; .ci/run installs it)"
)


async def test_kcat_to_aiokafka_and_back(settings_factory: Callable[..., Settings]) -> None:
    assert KCAT is not None
    settings = settings_factory()
    await topics.apply(settings)
    topic = settings.tick_topic

    lines = "".join(f"mkt{i}|kcat-{i}\n" for i in range(20))
    subprocess.run(
        [KCAT, "-b", settings.broker, "-P", "-t", topic, "-K", "|",
         "-X", "partitioner=murmur2_random"],
        input=lines.encode(), check=True, timeout=60,
    )
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=settings.broker, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    got: dict[bytes, bytes] = {}
    try:
        while len(got) < 20:
            batch = await asyncio.wait_for(consumer.getmany(timeout_ms=1000), 30)
            for records in batch.values():
                got.update({r.key: r.value for r in records})
    finally:
        await consumer.stop()
    assert got == {f"mkt{i}".encode(): f"kcat-{i}".encode() for i in range(20)}

    producer = AIOKafkaProducer(bootstrap_servers=settings.broker)
    await producer.start()
    try:
        await producer.send_and_wait(topic, key=b"from-aiokafka", value=b"hello kcat")
    finally:
        await producer.stop()
    out = subprocess.run(
        [KCAT, "-b", settings.broker, "-C", "-t", topic, "-e", "-q", "-f", "%k=%s\n"],
        capture_output=True, check=True, timeout=60,
    ).stdout.decode()
    assert "from-aiokafka=hello kcat" in out.splitlines()
    assert "mkt3=kcat-3" in out.splitlines()
