"""A local 3-node KRaft cluster: replicated topics, acks=all writes through a node's death."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from gswarm.kafka import topics
from gswarm.kafka.broker import LocalCluster, answers
from tests.conftest import broker_settings


async def produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all",
                                enable_idempotence=True, request_timeout_ms=60_000)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, key=value)
    finally:
        await producer.stop()


async def consume_all(bootstrap: str, topic: str, count: int) -> list[bytes]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest")
    await consumer.start()
    got: list[bytes] = []
    try:
        while len(got) < count:
            batch = await consumer.getmany(timeout_ms=5000)
            if not batch:
                break
            got += [r.value for rs in batch.values() for r in rs if r.value is not None]
    finally:
        await consumer.stop()
    return got


async def isr_sizes(bootstrap: str, topic: str) -> list[int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
        return [len(p["isr"]) for p in described[0]["partitions"]]
    finally:
        await admin.close()


def test_three_nodes_replicate_and_survive_one_node_killed(tmp_path: Path) -> None:
    cluster = LocalCluster(broker_settings(tmp_path / "kafka"), size=3)
    try:
        assert cluster.start() is True
        pids = cluster.pids()
        assert all(pids) and len(set(pids)) == 3
        props = cluster.nodes[1].properties.read_text()
        assert "min.insync.replicas=2" in props and "default.replication.factor=3" in props
        s = cluster.client_settings().override(app_id="c3", partitions=2)
        assert s.replication == 3
        asyncio.run(topics.apply(s))
        assert asyncio.run(isr_sizes(s.broker, s.tick_topic)) == [3, 3]
        asyncio.run(produce(s.broker, s.tick_topic, [b"a%d" % i for i in range(50)]))

        victim = cluster.kill_node(2)  # kill -9 of one node: writes go on (2 in sync)
        assert victim is not None and cluster.pids()[2] is None
        asyncio.run(produce(s.broker, s.tick_topic, [b"b%d" % i for i in range(50)]))
        assert cluster.start_node(2) is True  # back, by its PID, with its data
        got = asyncio.run(consume_all(s.broker, s.tick_topic, 100))
        assert sorted(got) == sorted([b"a%d" % i for i in range(50)]
                                     + [b"b%d" % i for i in range(50)])
        # the same cluster again after a stop: ports and id are kept in cluster.json
        assert LocalCluster(cluster.settings, size=3).bootstrap == cluster.bootstrap
        assert cluster.stop() is True
        assert cluster.pids() == [None, None, None]
    finally:
        cluster.stop()
    assert all(not os.path.exists(f"/proc/{pid}") or not answers(n.bootstrap, 2)
               for pid, n in zip(pids, cluster.nodes, strict=True))
