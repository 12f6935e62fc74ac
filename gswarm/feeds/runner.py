"""Wire a live feed (Manifold, Polymarket) to Kafka and run it until cancelled."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from gswarm.config import Settings
from gswarm.feeds.cursor import CursorStore, FileCursors, KafkaCursors
from gswarm.feeds.http import JsonApi
from gswarm.feeds.live import Delivery, FeedStats
from gswarm.feeds.manifold import ManifoldApi, ManifoldFeed, Watch
from gswarm.feeds.polymarket import PolymarketFeed
from gswarm.feeds.sink import KafkaSink
from gswarm.kafka import security, topics

log = logging.getLogger(__name__)

USER_AGENT = "gswarm-feed (+https://github.com/gswarm)"
STATS_EVERY_S = 30.0
FEED_TOPICS = ("ticks", "deadletters")  # what every live feed writes


@dataclass(frozen=True)
class FeedOptions:
    """What the ``gswarm feed manifold|polymarket`` command line chose."""

    name: str
    watch: Watch
    cursor_file: Path | None = None


@contextlib.asynccontextmanager
async def _plumbing(settings: Settings, options: FeedOptions) -> AsyncIterator[
    tuple[aiohttp.ClientSession, KafkaSink, CursorStore]
]:
    """The HTTP session, the Kafka sink and the cursor store of a live feed, once the
    topics it writes are there (a Kafka failure is the command's to report: the cursor
    never moves past anything Kafka did not acknowledge)."""
    await topics.require(settings, FEED_TOPICS if options.cursor_file else (
        *FEED_TOPICS, "feed-cursors"))
    timeout_s = settings.kafka_timeout_s
    kafka = security.options(settings)
    sink = KafkaSink(settings.broker, settings.tick_topic, settings.deadletter_topic,
                     timeout_s, kafka)
    cursors: CursorStore = (FileCursors(options.cursor_file) if options.cursor_file
                            else KafkaCursors(settings.broker, settings.cursor_topic,
                                              options.name, timeout_s, kafka))
    async with aiohttp.ClientSession(headers={"User-Agent": USER_AGENT}) as session:
        try:
            await sink.start()
            try:
                yield session, sink, cursors
            finally:
                await cursors.close()
        finally:
            await sink.stop()


def _delivery(settings: Settings, sink: KafkaSink, cursors: CursorStore, source: str) -> Delivery:
    return Delivery(sink, cursors, source=source, window_ms=int(settings.feed_window_s * 1000),
                    backfill_ms=int(settings.feed_backfill_s * 1000))


async def run_manifold(settings: Settings, options: FeedOptions) -> None:
    async with _plumbing(settings, options) as (session, sink, cursors):
        api = JsonApi(settings.manifold_api, settings.manifold_rpm, session=session,
                      backoff_s=settings.feed_retry_s)
        feed = ManifoldFeed(
            ManifoldApi(api), session, settings.manifold_ws,
            _delivery(settings, sink, cursors, "manifold"), sink, options.watch,
            ping_s=settings.feed_ping_s, retry_s=settings.feed_retry_s,
            meta_refresh_s=settings.feed_meta_refresh_s,
        )
        await _with_stats(feed.run(), feed.stats, api, "manifold")


async def run_polymarket(settings: Settings, options: FeedOptions) -> None:
    async with _plumbing(settings, options) as (session, sink, cursors):
        api = JsonApi(settings.polymarket_api, settings.polymarket_rpm, session=session,
                      backoff_s=settings.feed_retry_s)
        feed = PolymarketFeed(api, _delivery(settings, sink, cursors, "polymarket"), sink,
                              markets=options.watch.markets, poll_s=settings.feed_poll_s)
        await _with_stats(feed.run(), feed.stats, api, "polymarket")


async def _with_stats(work: Coroutine[Any, Any, None], stats: FeedStats, api: JsonApi,
                      source: str) -> None:
    """Run ``work``, logging the feed's counters every ``STATS_EVERY_S``."""

    async def report() -> None:
        while True:
            await asyncio.sleep(STATS_EVERY_S)
            log.info("%s feed: %s; requests %d (429s %d, retries %d)", source,
                     stats.snapshot(), api.stats.requests, api.stats.throttled,
                     api.stats.retries)

    reporter = asyncio.create_task(report())
    try:
        await work
    finally:
        reporter.cancel()
        log.info("%s feed stopped: %s", source, stats.snapshot())
