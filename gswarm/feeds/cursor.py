"""Feed cursors: where a live feed is, so a restart neither skips nor repeats an item.

A :class:`Cursor` is the newest event time a feed has delivered plus the ids it delivered
within ``window_ms`` of it. Items can arrive a little out of time order (a websocket
broadcast, a REST page), so "delivered" is not just "older than the newest": an item is
new unless its id is in the window, or it is older than the window (those were all
delivered before). A resumed feed asks its API for everything from :meth:`Cursor.since`
and drops what :meth:`Cursor.seen` says it has.

A feed's cursors (one per scope: ``global``, or one per watched market) are saved together
as one JSON document, after the items they cover are acknowledged by Kafka:

* :class:`KafkaCursors` keeps it in a compacted topic (``<app>-feed-cursors``) keyed by the
  feed's name: nothing local, so a feed can restart anywhere;
* :class:`FileCursors` keeps it in a local JSON file, replaced atomically.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from gswarm.errors import FeedError
from gswarm.kafka.clients import stop_within, stopped_answering


@dataclass
class Cursor:
    """The newest event time delivered and the ids delivered within ``window_ms`` of it."""

    window_ms: int
    ts: int = 0
    recent: dict[str, int] = field(default_factory=dict)  # id -> event time

    def seen(self, item_id: str, ts: int) -> bool:
        """Whether the item was delivered already (or is too old to be new)."""
        if not self.ts:
            return False
        return item_id in self.recent or ts < self.since()

    def add(self, item_id: str, ts: int) -> None:
        """Mark one item delivered."""
        self.recent[item_id] = ts
        if ts > self.ts:
            self.ts = ts
            # items come (nearly) in time order, so the oldest are at the front: trim
            # there (a late straggler stays a little longer, which is harmless)
            horizon = self.since()
            while self.recent:
                first = next(iter(self.recent))
                if self.recent[first] >= horizon:
                    break
                del self.recent[first]

    def since(self) -> int:
        """Event time (ms) from which a resumed feed must ask for items again."""
        return max(0, self.ts - self.window_ms)

    def to_json(self) -> dict[str, Any]:
        return {"ts": self.ts, "recent": self.recent}

    @classmethod
    def from_json(cls, doc: Any, window_ms: int) -> Cursor:
        if not (isinstance(doc, dict) and type(doc.get("ts")) is int
                and isinstance(doc.get("recent"), dict)):
            raise FeedError(f"not a feed cursor: {str(doc)[:200]}")
        return cls(window_ms, doc["ts"], {str(k): int(v) for k, v in doc["recent"].items()})


class CursorStore(Protocol):
    async def load(self) -> dict[str, Any]:
        """The saved document (``{}`` when nothing was saved yet)."""

    async def save(self, doc: dict[str, Any]) -> None:
        """Replace the saved document; returns once it is durable."""

    async def close(self) -> None: ...


FIX = ("give another --cursor-file, or delete this one (a feed without a cursor starts "
       "GSWARM_FEED_BACKFILL_S back)")


class FileCursors:
    """Cursors in a local JSON file (written to a temporary file, then renamed)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def load(self) -> dict[str, Any]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise FeedError(f"{self.path}: cannot read the cursor file: {exc}") from exc
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise FeedError(f"{self.path}: the cursor file is not JSON ({exc}): {FIX}") from exc
        if not isinstance(doc, dict):
            raise FeedError(f"{self.path}: the cursor file is not a JSON object: {FIX}")
        return doc

    async def save(self, doc: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(orjson.dumps(doc))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    async def close(self) -> None:
        return None


class KafkaCursors:
    """Cursors in a compacted Kafka topic, one message per feed (key = the feed's name).

    Loading and saving each fail with :class:`~gswarm.errors.KafkaUnreachable` if the
    broker does not answer within ``timeout_s``.
    """

    def __init__(self, bootstrap: str, topic: str, name: str, timeout_s: float = 30.0,
                 security: Mapping[str, Any] | None = None) -> None:
        self.bootstrap, self.topic, self.key = bootstrap, topic, name.encode()
        self.security = dict(security or {})  # aiokafka options (gswarm.kafka.security)
        self.timeout_s = timeout_s
        self._producer: AIOKafkaProducer | None = None

    async def load(self) -> dict[str, Any]:
        """The last document saved under this feed's key (reads the topic to its end)."""
        async with self._answered():
            return await self._load()

    async def _load(self) -> dict[str, Any]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False,
            auto_offset_reset="earliest", isolation_level="read_committed",
            request_timeout_ms=int(self.timeout_s * 1000), **self.security,
        )
        await consumer.start()
        try:
            if self.topic not in await consumer.topics():
                raise FeedError(f"topic {self.topic!r} does not exist: run `gswarm topics "
                                "apply` first")
            consumer.subscribe([self.topic])
            tps: set[TopicPartition] = set()
            for _ in range(100):
                tps = consumer.assignment()
                if tps:
                    break
                await asyncio.sleep(0.1)
            end = await consumer.end_offsets(list(tps))
            last: bytes | None = None
            while [tp for tp in tps if await consumer.position(tp) < end[tp]]:
                batches = await consumer.getmany(timeout_ms=1000)
                for records in batches.values():
                    for record in records:
                        if record.key == self.key:
                            last = record.value
        finally:
            await stop_within(consumer, self.timeout_s)
        if last is None:
            return {}
        doc = orjson.loads(last)
        if not isinstance(doc, dict):
            raise FeedError(f"{self.topic}: the cursor of {self.key.decode()!r} is not an object")
        return doc

    async def save(self, doc: dict[str, Any]) -> None:
        async with self._answered():
            if self._producer is None:
                self._producer = AIOKafkaProducer(
                    bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=True,
                    request_timeout_ms=int(self.timeout_s * 1000), **self.security,
                )
                await self._producer.start()
            await self._producer.send_and_wait(self.topic, key=self.key,
                                               value=orjson.dumps(doc))

    async def close(self) -> None:
        if self._producer is not None:
            await stop_within(self._producer, self.timeout_s)
            self._producer = None

    @contextlib.asynccontextmanager
    async def _answered(self) -> AsyncIterator[None]:
        try:
            async with asyncio.timeout(self.timeout_s):
                yield
        except TimeoutError:
            raise stopped_answering(self.bootstrap, self.timeout_s) from None

