"""Where a live feed's output goes: ticks and market metadata to the tick topic.

Ticks are keyed by market id (murmur2 puts a market on one partition, as the workers
expect); metadata goes as a ``market`` control message with the same key, so it is applied
in order with the market's ticks (see :mod:`gswarm.core.meta`). Items a feed cannot map
(a malformed bet from the API) go to the dead-letter topic with their reason, never
dropped. :meth:`KafkaSink.flush` returns once everything sent is acknowledged
(``acks=all``, idempotent producer): only then may the feed move its cursor.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from aiokafka import AIOKafkaProducer

from gswarm.core.meta import CONTROL_OP, MarketMeta
from gswarm.core.ticks import CONTROL_HEADER

Tick = dict[str, Any]


class Sink(Protocol):
    async def send_ticks(self, ticks: Iterable[Tick]) -> None: ...

    async def send_meta(self, meta: MarketMeta) -> None: ...

    async def dead_letter(self, raw: bytes, reason: str, detail: str, source: str) -> None: ...

    async def flush(self) -> None: ...


@dataclass
class SinkStats:
    ticks: int = 0
    metas: int = 0
    dead_letters: int = 0


class KafkaSink:
    """An idempotent ``acks=all`` producer to the tick and dead-letter topics."""

    def __init__(self, bootstrap: str, tick_topic: str, deadletter_topic: str) -> None:
        self.tick_topic, self.deadletter_topic = tick_topic, deadletter_topic
        self.producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5,
        )
        self.pending: list[asyncio.Future[Any]] = []
        self.stats = SinkStats()

    async def start(self) -> None:
        await self.producer.start()

    async def stop(self) -> None:
        await self.producer.stop()

    async def send_ticks(self, ticks: Iterable[Tick]) -> None:
        for tick in ticks:
            self.pending.append(await self.producer.send(
                self.tick_topic, key=tick["market"].encode(), value=orjson.dumps(tick)))
            self.stats.ticks += 1

    async def send_meta(self, meta: MarketMeta) -> None:
        self.pending.append(await self.producer.send(
            self.tick_topic, key=meta.market.encode(), value=orjson.dumps(meta.to_json()),
            headers=[(CONTROL_HEADER, CONTROL_OP.encode())]))
        self.stats.metas += 1

    async def dead_letter(self, raw: bytes, reason: str, detail: str, source: str) -> None:
        headers = [
            ("gswarm-reason", reason.encode()), ("gswarm-detail", detail[:1000].encode()),
            ("gswarm-source", source.encode()),
            ("gswarm-time-ms", str(int(time.time() * 1000)).encode()),
        ]
        self.pending.append(await self.producer.send(
            self.deadletter_topic, value=raw, headers=headers))
        self.stats.dead_letters += 1

    async def flush(self) -> None:
        """Wait until everything sent so far is acknowledged (raises a send's error)."""
        pending, self.pending = self.pending, []
        await asyncio.gather(*pending)
