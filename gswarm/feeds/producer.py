"""The Kafka side of the feeds: send ticks to the tick topic, keyed by market id.

A message's key is the market id (UTF-8), so aiokafka's default murmur2 partitioner puts a
market's ticks on one partition, in order. Its value is one tick as a JSON object, or (with
``array_size > 1``) a JSON array of up to ``array_size`` ticks of that market.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from tqdm import tqdm

from gswarm.errors import FeedError
from gswarm.feeds.synthetic import MarketBatcher, batch_by_market, market_of
from gswarm.kafka.clients import Acks, acked_within, stop_within

Tick = dict[str, Any]
Batch = tuple[str, list[Tick]]

MIN_SLEEP_S = 0.005  # the rate limiter never sleeps for less (cheap, and asyncio-accurate)
BURST_S = 0.05  # the rate limiter's bucket holds this many seconds' worth of ticks
YIELD_EVERY = 1000  # messages between explicit yields to the event loop
PRUNE_EVERY = 10_000  # messages between checks of completed send futures


@dataclass(frozen=True)
class ProduceSummary:
    """What a :func:`produce` call sent, and how fast."""

    messages: int
    ticks: int
    seconds: float
    ticks_per_s: float

    def __str__(self) -> str:
        return (
            f"produced {self.ticks:,} ticks in {self.messages:,} messages "
            f"in {self.seconds:.2f} s ({self.ticks_per_s:,.0f} ticks/s)"
        )


class TokenBucket:
    """A ticks-per-second limiter: ``await take(n)`` before sending ``n`` ticks.

    Tokens accrue at ``rate`` per second up to ``capacity`` (default ``BURST_S`` seconds'
    worth, at least 1), starting empty; in any span of T seconds at most
    ``capacity + rate * T`` tokens are spent. A take may run
    the bucket into debt, which is slept off in one sleep of at least ``MIN_SLEEP_S``.
    """

    def __init__(self, rate: float, capacity: float | None = None) -> None:
        if not rate > 0 or rate == float("inf"):
            raise FeedError(f"rate must be a finite number of ticks/s > 0, got {rate}")
        self.rate = rate
        self.capacity = max(1.0, rate * BURST_S) if capacity is None else capacity
        self.tokens = 0.0
        self.stamp = time.monotonic()

    async def take(self, n: int) -> None:
        """Spend ``n`` tokens, sleeping first if the bucket is in debt."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        self.tokens -= n
        if self.tokens < 0:
            await asyncio.sleep(max(MIN_SLEEP_S, -self.tokens / self.rate))


async def produce(
    bootstrap: str,
    topic: str,
    ticks: AsyncIterable[Tick] | Iterable[Tick],
    *,
    rate: float | None = None,
    array_size: int = 1,
    progress: bool = True,
    total: int | None = None,
    timeout_s: float = 30.0,
    security: Mapping[str, Any] | None = None,
) -> ProduceSummary:
    """Send ``ticks`` to ``topic`` and wait until every message is acknowledged.

    ``rate`` limits the flow in ticks per second (``None``: as fast as possible);
    ``array_size > 1`` packs consecutive ticks of one market into JSON arrays (see
    :func:`gswarm.feeds.synthetic.batch_by_market`); ``progress`` shows a tqdm bar on stderr
    when it is a terminal (``total`` ticks, if known). The producer is idempotent with
    ``acks="all"``. A broker that does not answer, or leaves a message unacknowledged, for
    ``timeout_s`` ends it with :class:`~gswarm.errors.KafkaUnreachable`. ``security`` holds
    aiokafka's TLS/SASL options (:func:`gswarm.kafka.security.options`).
    """
    batches = _batches(ticks, array_size)
    bucket = TokenBucket(rate) if rate is not None else None
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=262144, acks="all",
        enable_idempotence=True, request_timeout_ms=int(timeout_s * 1000), **(security or {}),
    )
    bar = tqdm(total=total, unit="tick", unit_scale=True, file=sys.stderr,
               disable=None if progress else True, desc=topic, mininterval=0.5)
    started = time.perf_counter()
    messages = sent = 0
    acks = Acks()
    try:
        await producer.start()
        pending: deque[asyncio.Future[Any]] = deque()
        async with acked_within(acks, timeout_s, bootstrap):
            async for market, batch in batches:
                if bucket is not None:
                    await bucket.take(len(batch))
                future = await producer.send(topic, key=market.encode(), value=_value(batch))
                pending.append(future)
                acks.track(future)
                messages += 1
                sent += len(batch)
                bar.update(len(batch))
                if messages % PRUNE_EVERY == 0:
                    _prune(pending)
            await asyncio.gather(*pending)
    finally:
        bar.close()
        await batches.aclose()
        await stop_within(producer, timeout_s)
    seconds = time.perf_counter() - started
    return ProduceSummary(messages, sent, seconds, sent / seconds if seconds > 0 else 0.0)


def _value(batch: list[Tick]) -> bytes:
    """One tick as a JSON object, several as a JSON array."""
    return orjson.dumps(batch[0] if len(batch) == 1 else batch)


def _prune(pending: deque[asyncio.Future[Any]]) -> None:
    """Drop completed send futures from the front, raising the first failure."""
    while pending and pending[0].done():
        pending.popleft().result()


def _batches(ticks: AsyncIterable[Tick] | Iterable[Tick], size: int) -> AsyncGenerator[Batch, None]:
    """The ``(market, ticks)`` messages to send, from a sync or an async source."""
    if size < 1:
        raise FeedError(f"array_size must be >= 1, got {size}")
    if isinstance(ticks, AsyncIterable):
        return _async_batches(ticks, size)
    return _sync_batches(ticks, size)


async def _sync_batches(ticks: Iterable[Tick], size: int) -> AsyncGenerator[Batch, None]:
    for i, batch in enumerate(batch_by_market(ticks, size), 1):
        yield batch
        if i % YIELD_EVERY == 0:
            await asyncio.sleep(0)  # a sync source never waits: let the sender run


async def _async_batches(ticks: AsyncIterable[Tick], size: int) -> AsyncGenerator[Batch, None]:
    if size == 1:
        async for tick in ticks:
            yield market_of(tick), [tick]
        return
    batcher = MarketBatcher(size)
    async for tick in ticks:
        for batch in batcher.add(tick):
            yield batch
    for batch in batcher.flush():
        yield batch
