"""Reading the signals topic from a terminal (``gswarm signals tail``)."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Callable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from gswarm.config import Settings
from gswarm.kafka import security, topics
from gswarm.kafka.clients import stop_within


def line(doc: dict[str, Any]) -> str:
    """One signal as a line: event time (UTC), rule, market, its values, the question."""
    when = datetime.datetime.fromtimestamp(doc["ts"] / 1000, datetime.UTC)
    values = " ".join(f"{k}={_short(v)}" for k, v in doc.get("values", {}).items())
    question = f"  {doc['question']!r}" if doc.get("question") else ""
    return f"{when:%Y-%m-%d %H:%M:%S} {doc['rule']:<12} {doc['market']}  {values}{question}"


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def wanted(doc: Any, rule: str | None, market: str | None) -> bool:
    return isinstance(doc, dict) and (rule is None or doc.get("rule") == rule) and (
        market is None or doc.get("market") == market)


async def tail(settings: Settings, echo: Callable[[dict[str, Any]], None], *,
               rule: str | None = None, market: str | None = None,
               from_start: bool = False, count: int = 0) -> int:
    """Print signals as they arrive on the signals topic (from its end, or its start with
    ``from_start``) until ``count`` were shown (0: until cancelled). Returns how many."""
    await topics.require(settings, ["signals"])
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.broker, enable_auto_commit=False,
        request_timeout_ms=int(settings.kafka_timeout_s * 1000), **security.options(settings),
    )
    await consumer.start()
    shown = 0
    try:
        # require() checked the topic has its declared partitions: GSWARM_PARTITIONS
        tps = [TopicPartition(settings.signals_topic, p) for p in range(settings.partitions)]
        consumer.assign(tps)
        if from_start:
            await consumer.seek_to_beginning(*tps)
        else:
            await consumer.seek_to_end(*tps)
        while count == 0 or shown < count:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    try:
                        doc = orjson.loads(record.value or b"")
                    except orjson.JSONDecodeError:
                        continue
                    if wanted(doc, rule, market):
                        echo(doc)
                        shown += 1
                        if count and shown >= count:
                            return shown
            await asyncio.sleep(0)
    finally:
        await stop_within(consumer, settings.kafka_timeout_s)
    return shown
