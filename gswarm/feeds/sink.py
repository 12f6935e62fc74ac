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
import contextlib
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from aiokafka import AIOKafkaProducer

from gswarm.core.meta import CONTROL_OP, MarketMeta
from gswarm.core.ticks import CONTROL_HEADER
from gswarm.kafka.clients import Acks, acked_within, stop_within

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
    """An idempotent ``acks=all`` producer to the tick and dead-letter topics.

    A broker that leaves a message unacknowledged for ``timeout_s`` fails the send or
    flush waiting on it with :class:`~gswarm.errors.KafkaUnreachable`.
    """

    def __init__(self, bootstrap: str, tick_topic: str, deadletter_topic: str,
                 timeout_s: float = 30.0, security: Mapping[str, Any] | None = None) -> None:
        self.bootstrap, self.timeout_s = bootstrap, timeout_s
        self.tick_topic, self.deadletter_topic = tick_topic, deadletter_topic
        self.producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5,
            request_timeout_ms=int(timeout_s * 1000), **(security or {}),
        )
        self.pending: list[asyncio.Future[Any]] = []
        self.acks = Acks()
        self.stats = SinkStats()

    async def start(self) -> None:
        await self.producer.start()

    async def stop(self) -> None:
        await stop_within(self.producer, self.timeout_s)

    async def send_ticks(self, ticks: Iterable[Tick]) -> None:
        async with self._acked():
            for tick in ticks:
                await self._send(self.tick_topic, tick["market"].encode(), orjson.dumps(tick))
                self.stats.ticks += 1

    async def send_meta(self, meta: MarketMeta) -> None:
        async with self._acked():
            await self._send(self.tick_topic, meta.market.encode(),
                             orjson.dumps(meta.to_json()),
                             [(CONTROL_HEADER, CONTROL_OP.encode())])
        self.stats.metas += 1

    async def dead_letter(self, raw: bytes, reason: str, detail: str, source: str) -> None:
        headers = [
            ("gswarm-reason", reason.encode()), ("gswarm-detail", detail[:1000].encode()),
            ("gswarm-source", source.encode()),
            ("gswarm-time-ms", str(int(time.time() * 1000)).encode()),
        ]
        async with self._acked():
            await self._send(self.deadletter_topic, None, raw, headers)
        self.stats.dead_letters += 1

    async def flush(self) -> None:
        """Wait until everything sent so far is acknowledged (raises a send's error)."""
        pending, self.pending = self.pending, []
        async with self._acked():
            await asyncio.gather(*pending)

    async def _send(self, topic: str, key: bytes | None, value: bytes,
                    headers: list[tuple[str, bytes]] | None = None) -> None:
        future = await self.producer.send(topic, key=key, value=value, headers=headers)
        self.pending.append(future)
        self.acks.track(future)

    def _acked(self) -> contextlib.AbstractAsyncContextManager[None]:
        return acked_within(self.acks, self.timeout_s, self.bootstrap)
