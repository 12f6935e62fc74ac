"""`gswarm feed manifold` end to end: fake Manifold -> real Kafka -> a worker's facts.

The feed runs as the user runs it (the CLI, in its own process, stopped by its PID), against
a local fake of Manifold's REST API and websocket; a real worker turns its output into
facts, and the tick topic itself is read back to check nothing was sent twice.
"""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from gswarm.config import Settings
from gswarm.errors import FeedError
from gswarm.feeds.cursor import KafkaCursors
from gswarm.feeds.polymarket import identify as trade_id
from gswarm.feeds.polymarket import to_tick as trade_tick
from gswarm.runner import WorkerProcess
from tests.feeds.fake_apis import (
    BetMaker,
    FakeManifold,
    FakePolymarket,
    LocalServer,
    TradeMaker,
    recorded_bets,
    recorded_markets,
)
from tests.feeds.test_manifold import BINARY, MULTI, tickable
from tests.feeds.test_polymarket import CONDITIONS, api_reversed, per_market
from tests.stream.conftest import OUTPUT, wait_for

pytestmark = pytest.mark.timeout(300)
T = TypeVar("T")
GSWARM = Path(sys.executable).parent / "gswarm"


class ServerThread:
    """Runs a fake API's event loop in a thread, so the test itself can block."""

    def __init__(self, fake: LocalServer) -> None:
        self.fake = fake
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        self.call(self.fake.start())
        return self

    def __exit__(self, *exc: object) -> None:
        self.call(self.fake.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)


class FeedProcess:
    """`gswarm feed manifold|polymarket --all` in its own process; stopped by its PID."""

    def __init__(self, settings: Settings, fake: FakeManifold | FakePolymarket,
                 log: Path) -> None:
        self.env = {**os.environ, **settings.to_env(), "GSWARM_FEED_PING_S": "1",
                    "GSWARM_FEED_RETRY_S": "0.1", "GSWARM_FEED_POLL_S": "0.5"}
        if isinstance(fake, FakeManifold):
            self.kind = "manifold"
            self.env.update(GSWARM_MANIFOLD_API=fake.url, GSWARM_MANIFOLD_WS=fake.ws_url)
        else:
            self.kind = "polymarket"
            self.env.update(GSWARM_POLYMARKET_API=fake.url)
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([str(GSWARM), "feed", self.kind, "--all"],
                                         env=self.env, stdout=out, stderr=subprocess.STDOUT)

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                return self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
                raise
        return self.proc.returncode


@pytest.fixture
def feeds(request: pytest.FixtureRequest) -> Iterator[Callable[..., FeedProcess]]:
    started: list[FeedProcess] = []

    def make(settings: Settings, fake: FakeManifold | FakePolymarket) -> FeedProcess:
        feed = FeedProcess(settings, fake, OUTPUT / f"{request.node.name}-feed.log")
        started.append(feed)
        return feed

    yield make
    for feed in started:
        if feed.proc is not None and feed.proc.poll() is None:
            feed.stop()


async def _read_topic(settings: Settings, topic: str) -> list[Any]:
    """Every record of ``topic``, from the beginning to its current end."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=settings.broker,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        while not consumer.assignment():
            await asyncio.sleep(0.1)
        tps = list(consumer.assignment())
        end = await consumer.end_offsets(tps)
        records: list[Any] = []
        while [tp for tp in tps if await consumer.position(tp) < end[tp]]:
            for part in (await consumer.getmany(timeout_ms=500)).values():
                records += part
        return records
    finally:
        await consumer.stop()


def _ticks(worker: WorkerProcess) -> int:
    return int(worker.get("/api/stats")["ticks"])


def _started(feed: FeedProcess, worker: WorkerProcess, ticks: int) -> FeedProcess:
    """Start ``feed``; return once ``worker`` holds ``ticks`` ticks."""
    feed.start()
    wait_for(lambda: _ticks(worker) == ticks, 90, f"{ticks} items as ticks")
    return feed


def _market(worker: WorkerProcess, market: str) -> dict[str, Any]:
    result: dict[str, Any] = worker.get(f"/api/markets/{urllib.parse.quote(market, safe='')}")
    return result


def test_manifold_feed_to_facts_with_metadata_restart_and_dead_letters(
    app_settings: Settings, workers: Callable[..., WorkerProcess],
    feeds: Callable[..., FeedProcess],
) -> None:
    maker = BetMaker()
    history = [maker.bet(BINARY) for _ in range(30)] + maker.restamp(recorded_bets())
    fake = FakeManifold(history, recorded_markets())
    worker = workers(app_settings)
    with ServerThread(fake) as server:
        feed = feeds(app_settings, fake)
        feed.start()
        expected = tickable(history)

        def ticks() -> int:
            return _ticks(worker)

        wait_for(lambda: ticks() == len(expected), 90, f"{len(expected)} backfilled ticks")
        wait_for(lambda: all("market/question" in _market(worker, m)["meta"] for m in (
            BINARY, f"{MULTI}:0a3f6c1e9b27")), 60, "metadata")
        binary = _market(worker, BINARY)
        assert binary["meta"]["market/question"] == recorded_markets()[BINARY]["question"]
        assert binary["meta"]["market/outcome_type"] == "BINARY"
        assert binary["ticks"] == sum(1 for b in history if b["contractId"] == BINARY
                                      and b["id"] in expected)
        answer = _market(worker, f"{MULTI}:0a3f6c1e9b27")
        assert answer["meta"]["market/question"].endswith("— India")

        # live bets pushed on the websocket, one of them malformed
        wait_for(lambda: fake.subscribers() >= 1, 30, "a subscription")
        live = [maker.bet(BINARY) for _ in range(20)]
        bad = {**maker.bet(MULTI), "probAfter": 1.7}
        server.call(fake.add_bets([*live[:10], bad, *live[10:]]))
        expected += tickable(live)
        wait_for(lambda: ticks() == len(expected), 60, "live ticks")

        # stop the feed; bets arrive meanwhile; the restarted feed resumes from its cursor
        assert feed.stop() == 0
        down = [maker.bet(MULTI) for _ in range(15)]
        server.call(fake.add_bets(down, push=False))
        expected += tickable(down)
        feed.start()
        wait_for(lambda: ticks() == len(expected), 90, "ticks after the restart")
        time.sleep(2)  # and no more arrive
        assert ticks() == len(expected)
        assert worker.get("/api/stats")["duplicates"] == 0
        assert feed.stop() == 0

    records = asyncio.run(_read_topic(app_settings, app_settings.tick_topic))
    sent = Counter(orjson.loads(r.value)["id"] for r in records if not r.headers)
    assert sorted(sent) == sorted(expected) and max(sent.values()) == 1  # once each
    dead = asyncio.run(_read_topic(app_settings, app_settings.deadletter_topic))
    [letter] = dead
    headers = dict(letter.headers)
    assert headers["gswarm-reason"] == b"bad_item" and b"probAfter" in headers["gswarm-detail"]
    assert orjson.loads(letter.value)["id"] == bad["id"]
    cursors = asyncio.run(_read_topic(app_settings, app_settings.cursor_topic))
    assert cursors and cursors[-1].key == b"manifold"

    # the metadata is in the changelog: a worker with empty state recovers it
    worker.stop()
    fresh = workers(app_settings, "w2")
    assert _market(fresh, BINARY)["meta"] == binary["meta"]
    asof = fresh.get(f"/api/markets/{BINARY}/asof?attr=market/question&t={2**62}")
    assert asof["datom"]["value"] == binary["meta"]["market/question"]


def test_polymarket_feed_to_facts_and_restart(
    app_settings: Settings, workers: Callable[..., WorkerProcess],
    feeds: Callable[..., FeedProcess],
) -> None:
    maker = TradeMaker()
    fake = FakePolymarket([maker.trade(outcome="Yes" if i % 3 else "No") for i in range(40)])
    worker = workers(app_settings)
    ticks = functools.partial(_ticks, worker)
    with ServerThread(fake) as server:
        feed = _started(feeds(app_settings, fake), worker, 40)
        assert feed.stop() == 0
        fresh = [maker.trade() for _ in range(9)]
        server.call(_extend(fake, fresh))
        feed.start()
        wait_for(lambda: ticks() == 49, 90, "the trades made while the feed was down")
        time.sleep(2)
        assert ticks() == 49
        assert feed.stop() == 0
    market = fake.trades[0]["conditionId"] + ":Yes"
    latest = _market(worker, market)
    assert latest["meta"]["market/question"].startswith("Will the Fed cut")
    assert latest["source"] == "polymarket"
    records = asyncio.run(_read_topic(app_settings, app_settings.tick_topic))
    sent = Counter(orjson.loads(r.value)["id"] for r in records if not r.headers)
    assert sorted(sent) == sorted(trade_id(t)[0] for t in fake.trades)
    assert max(sent.values()) == 1


def test_polymarket_latest_of_each_market_is_its_newest_trade_with_same_second_runs(
    app_settings: Settings, workers: Callable[..., WorkerProcess],
    feeds: Callable[..., FeedProcess],
) -> None:
    maker = TradeMaker(seed=6)
    fake = FakePolymarket(maker.runs(1150, CONDITIONS))  # pages of 500 split runs
    worker = workers(app_settings)
    with ServerThread(fake) as server:
        feed = _started(feeds(app_settings, fake), worker, 1150)
        server.call(_extend(fake, maker.runs(60, CONDITIONS, join=True)))  # a later poll
        wait_for(lambda: _ticks(worker) == 1210, 90, "the next poll's trades")
        assert feed.stop() == 0
    newest: dict[str, dict[str, Any]] = {}
    for trade in fake.listing():
        newest.setdefault(trade_tick(trade)["market"], trade)
    assert len(newest) == 8
    for market, trade in newest.items():
        latest = _market(worker, market)
        assert (latest["id"], latest["prob"]) == (trade_id(trade)[0], trade["price"]), market
    records = asyncio.run(_read_topic(app_settings, app_settings.tick_topic))
    on_topic = per_market(orjson.loads(r.value) for r in records if not r.headers)
    assert on_topic == api_reversed(fake)


async def _extend(fake: FakePolymarket, trades: list[dict[str, Any]]) -> None:
    fake.trades += trades


def test_kafka_cursors_round_trip_and_a_missing_topic_is_a_clear_error(
    app_settings: Settings,
) -> None:
    async def run() -> None:
        store = KafkaCursors(app_settings.broker, app_settings.cursor_topic, "f1")
        other = KafkaCursors(app_settings.broker, app_settings.cursor_topic, "f2")
        try:
            assert await store.load() == {}
            await store.save({"scopes": {"global": {"ts": 5, "recent": {"a": 5}}}})
            await other.save({"scopes": {}})
            await store.save({"scopes": {"global": {"ts": 9, "recent": {"b": 9}}}})
            assert await store.load() == {"scopes": {"global": {"ts": 9, "recent": {"b": 9}}}}
            assert await other.load() == {"scopes": {}}
        finally:
            await store.close()
            await other.close()
        with pytest.raises(FeedError, match="topics apply"):
            await KafkaCursors(app_settings.broker, "no-such-topic-here", "f1").load()

    asyncio.run(run())
