"""Fixtures for end-to-end tests: topics applied, real worker processes, a producer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.structs import TopicPartition

from gswarm.config import Settings
from gswarm.kafka import topics
from gswarm.ports import free_port
from gswarm.runner import WorkerProcess

OUTPUT = Path(__file__).resolve().parents[2] / "test-output"


@pytest.fixture
def app_settings(settings_factory: Callable[..., Settings]) -> Settings:
    """Settings for one test's app, with its topics applied."""
    settings = settings_factory(web_port=free_port(), partitions=4, log_level="info")
    asyncio.run(topics.apply(settings))
    return settings


class WorkerPool:
    """Workers started for a test or a module; every one is stopped by its PID."""

    def __init__(self, label: str) -> None:
        self.label = label  # the start of their log files' names
        self.started: list[WorkerProcess] = []

    def start(self, settings: Settings, name: str = "w1", ready: bool = True,
              **kwargs: Any) -> WorkerProcess:
        log = OUTPUT / f"{self.label}-{name}-{len(self.started)}.log"
        worker = WorkerProcess(settings, name, log_path=log, **kwargs)
        worker.start()
        self.started.append(worker)
        if ready:
            worker.wait_ready()
        return worker

    def stop(self) -> None:
        for worker in self.started:
            worker.stop(timeout=20)


@pytest.fixture
def workers(request: pytest.FixtureRequest) -> Iterator[Callable[..., WorkerProcess]]:
    """Start workers; every one is stopped by its PID at the end of the test."""
    pool = WorkerPool(request.node.name)
    yield pool.start
    pool.stop()


@pytest.fixture(scope="module")
def module_workers(request: pytest.FixtureRequest
                   ) -> Iterator[Callable[..., WorkerProcess]]:
    """Start workers shared by a module's tests; stopped by their PIDs after the last."""
    pool = WorkerPool(request.module.__name__.rsplit(".", 1)[-1])
    yield pool.start
    pool.stop()


async def produce_messages(
    settings: Settings, messages: Iterable[tuple[bytes | None, bytes]], topic: str | None = None
) -> int:
    """Send (key, value) pairs in order; wait for every ack. Returns the count."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.broker, linger_ms=5, enable_idempotence=True, acks="all"
    )
    await producer.start()
    try:
        futures = [await producer.send(topic or settings.tick_topic, key=k, value=v)
                   for k, v in messages]
        await asyncio.gather(*futures)
        return len(futures)
    finally:
        await producer.stop()


def produce_ticks(settings: Settings, ticks: Iterable[dict[str, Any]]) -> int:
    return asyncio.run(produce_messages(
        settings, ((t["market"].encode(), orjson.dumps(t)) for t in ticks)
    ))


def wait_for(predicate: Callable[[], bool], timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except OSError:  # a worker not answering (yet): keep waiting
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def wait_consumed(
    worker: WorkerProcess, messages: int, timeout: float = 90.0, field: str = "messages"
) -> dict[str, Any]:
    """Wait until the worker's ``field`` counter reaches ``messages``; return its stats."""
    stats: dict[str, Any] = {}

    def done() -> bool:
        nonlocal stats
        stats = worker.get("/api/stats")
        return int(stats[field]) >= messages

    wait_for(done, timeout, f"{field} >= {messages}")
    return stats


async def set_max_message_bytes(s: Settings, topic: str, value: str) -> str:
    """Change ``topic``'s ``max.message.bytes`` (under a running worker: the broker then
    refuses larger batches); returns the value it had."""
    admin = AIOKafkaAdminClient(bootstrap_servers=s.broker)
    await admin.start()
    try:
        was = str((await topics.describe(admin, [topic]))[topic]["configs"]["max.message.bytes"])
        await admin.alter_configs([ConfigResource(
            ConfigResourceType.TOPIC, topic, configs={"max.message.bytes": value})])
        for _ in range(100):  # the broker applies topic configs asynchronously
            seen = await topics.describe(admin, [topic])
            if seen[topic]["configs"]["max.message.bytes"] == value:
                return was
            await asyncio.sleep(0.1)
        raise AssertionError(f"{topic}: max.message.bytes never became {value}")
    finally:
        await admin.close()


async def records_in(settings: Settings, topic: str) -> int:
    """Messages ever written to ``topic``: the sum of its partitions' end offsets."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.broker, group_id=None)
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        if not parts:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic) or set()
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in parts])
        return int(sum(ends.values()))
    finally:
        await consumer.stop()
