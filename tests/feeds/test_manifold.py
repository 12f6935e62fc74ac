"""The live Manifold feed against a local fake of its REST API and websocket.

Output goes to a list (the Kafka side is shown end to end in test_live_e2e.py): these
tests check what the feed decides to send, and when.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gswarm.core.meta import MarketMeta
from gswarm.errors import FeedError
from gswarm.feeds.cursor import FileCursors
from gswarm.feeds.http import HttpError, JsonApi, NotFound
from gswarm.feeds.live import Delivery
from gswarm.feeds.manifold import ManifoldApi, ManifoldFeed, Watch, identify, market_meta, to_tick
from tests.feeds.fake_apis import BetMaker, FakeManifold, recorded_bets, recorded_markets

pytestmark = pytest.mark.timeout(120)

BINARY, MULTI = "kQ4ZlVbZ3y7XhTq2Rm8P", "mC7nD2sFq9LwXe4Yb1Hk"


class ListSink:
    """Collects what a feed sends."""

    def __init__(self) -> None:
        self.ticks: list[dict[str, Any]] = []
        self.metas: list[MarketMeta] = []
        self.dead: list[tuple[bytes, str, str]] = []
        self.flushes = 0

    async def send_ticks(self, ticks: Iterable[dict[str, Any]]) -> None:
        self.ticks += list(ticks)

    async def send_meta(self, meta: MarketMeta) -> None:
        self.metas.append(meta)

    async def dead_letter(self, raw: bytes, reason: str, detail: str, source: str) -> None:
        self.dead.append((raw, reason, detail))

    async def flush(self) -> None:
        self.flushes += 1


def tickable(bets: Iterable[dict[str, Any]]) -> list[str]:
    """Ids of the bets that are price moves (what must become ticks)."""
    return [b["id"] for b in bets if to_tick(b) is not None]


# -- mapping -------------------------------------------------------------------------------


def test_recorded_bets_map_to_one_tick_each_except_redemptions_and_unfilled_orders() -> None:
    bets = recorded_bets()
    ticks = {b["id"]: to_tick(b) for b in bets}
    assert ticks["r1e2d3e4m5p6"] is None  # a redemption
    assert ticks["o2p3e4n5l6m7"] is None  # a resting limit order with no fill
    moves = {k: t for k, t in ticks.items() if t is not None}
    assert len(moves) == 6
    limit = moves["l1m2t3f4i5l6"]  # a limit order that filled: it moved the price
    assert limit["prob"] == 0.631 and limit["volume"] == 60
    sale = moves["s4a5l6e7x8y9"]
    assert sale["volume"] == 40.5 and sale["prob"] == 0.612 and sale["outcome"] == "YES"
    # multiple choice: each answer is its own market, the sibling answer moves too
    assert moves["c1h2o3i4c5e6"]["market"] == f"{MULTI}:0a3f6c1e9b27"
    assert moves["c7h8o9i0c1e2"]["market"] == f"{MULTI}:5d8e2b4a7c10"
    for bet in bets:
        tick = ticks[bet["id"]]
        if tick is not None:
            assert tick["ts"] == bet["createdTime"] and tick["id"] == bet["id"]
            assert tick["prob"] == bet["probAfter"] and tick["trader"] == bet["userId"]
            assert tick["source"] == "manifold"


def test_bets_without_id_or_time_are_rejected_with_a_reason() -> None:
    from gswarm.feeds.replay import BadRow

    bet = recorded_bets()[0]
    for broken, reason in (({**bet, "id": None}, "without an id"),
                           ({**bet, "createdTime": "soon"}, "without a createdTime")):
        with pytest.raises(BadRow, match=reason):
            identify(broken)


def test_market_metadata_of_binary_and_multiple_choice_markets() -> None:
    markets = recorded_markets()
    [binary] = market_meta(markets[BINARY], 1_700_000_000_000)
    assert binary.market == BINARY and binary.ts == 1_700_000_000_000
    assert binary.values["market/question"].startswith("Will the 2024 Atlantic")
    assert binary.values["market/outcome_type"] == "BINARY"
    assert binary.values["market/close_time"] == 1735689599000
    assert binary.values["market/resolution"] is None
    metas = market_meta(markets[MULTI], 1)
    assert [m.market for m in metas] == [MULTI, f"{MULTI}:0a3f6c1e9b27",
                                         f"{MULTI}:5d8e2b4a7c10"]
    assert metas[1].values["market/question"].endswith("— India")
    resolved = {**markets[BINARY], "isResolved": True, "resolution": "YES",
                "resolutionTime": 1733000000000}
    assert market_meta(resolved, 1)[0].values["market/resolution"] == "YES"
    with pytest.raises(FeedError):
        market_meta({"question": "no id"}, 1)


# -- REST ----------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def served(fake: FakeManifold, rpm: float = 60_000) -> AsyncIterator[ManifoldApi]:
    await fake.start()
    try:
        async with aiohttp.ClientSession() as session:
            yield ManifoldApi(JsonApi(fake.url, rpm, session=session, backoff_s=0.05))
    finally:
        await fake.stop()


async def test_backfill_pages_through_ties_and_returns_every_bet_once_oldest_first() -> None:
    maker = BetMaker()
    bets = []
    for i in range(2600):  # runs of up to 6 bets in one ms straddle the page boundaries
        bets.append(maker.bet(BINARY if i % 3 else MULTI, same_ms=i % 6 != 0))
    fake = FakeManifold(bets)
    listing = fake.listing()
    assert listing[999]["createdTime"] == listing[1000]["createdTime"]
    async with served(fake) as api:
        got = await api.bets_since(bets[0]["createdTime"])
        assert sorted(b["id"] for b in got) == sorted(b["id"] for b in bets)
        # the API's order reversed: bets of one ms too, so the one it lists first is last
        assert [b["id"] for b in got] == [b["id"] for b in reversed(listing)]
        assert len(fake.paths("/v0/bets")) >= 3  # it paged (1000 per page)
        assert all(int(q["limit"]) <= 1000 for q in fake.paths("/v0/bets"))
        # since is inclusive; one market only
        since = bets[1500]["createdTime"]
        one = await api.bets_since(since, BINARY)
        assert [b["id"] for b in one] == [b["id"] for b in reversed(listing)
                                          if b["createdTime"] >= since
                                          and b["contractId"] == BINARY]


async def test_429_is_retried_and_404_and_400_are_clear_errors() -> None:
    maker = BetMaker()
    fake = FakeManifold([maker.bet(BINARY) for _ in range(5)], recorded_markets())
    async with served(fake) as api:
        fake.throttle = 2
        assert len(await api.bets_since(0)) == 5
        assert api.api.stats.throttled == 2 and api.api.stats.retries == 2
        with pytest.raises(NotFound, match="Contract not found"):
            await api.market("nope")
        with pytest.raises(FeedError, match="no market has the slug or id"):
            await api.find("no-such-slug")
        before = len(fake.requests)
        with pytest.raises(HttpError, match="400"):
            await api.api.get("/v0/bets", {"market": "x"})  # unknown parameter
        assert len(fake.requests) == before + 1  # a bad request is not retried


async def test_requests_stay_within_the_per_minute_budget() -> None:
    rpm = 600.0  # 10 per second, burst 1
    fake = FakeManifold([], recorded_markets())
    async with served(fake, rpm=rpm) as api:
        await asyncio.gather(*(api.market(BINARY) for _ in range(25)))
    times = [t for t, _, _ in fake.requests]
    assert len(times) == 25
    rate = rpm / 60
    for i in range(len(times)):
        for j in range(i + 1, len(times)):
            # in any span of T seconds, at most 1 + rate * T requests (+ timer slack)
            assert j - i + 1 <= 1 + rate * (times[j] - times[i]) + 1, (i, j)
    assert times[-1] - times[0] >= (25 - 2) / rate


# -- the live feed -------------------------------------------------------------------------


class Harness:
    """A feed on a fake Manifold, with a list sink and a file cursor."""

    def __init__(self, fake: FakeManifold, cursor: Path, watch: Watch, **opts: Any) -> None:
        self.fake, self.cursor, self.watch = fake, cursor, watch
        self.opts = {"ping_s": 0.2, "retry_s": 0.05, "meta_refresh_s": 60.0, **opts}
        self.sink = ListSink()
        self.feed: ManifoldFeed | None = None
        self.task: asyncio.Task[None] | None = None
        self.session: aiohttp.ClientSession | None = None

    async def start(self, backfill_ms: int = 3_600_000) -> ManifoldFeed:
        self.sink = ListSink()
        self.session = aiohttp.ClientSession()
        api = ManifoldApi(JsonApi(self.fake.url, 60_000, session=self.session, backoff_s=0.05))
        delivery = Delivery(self.sink, FileCursors(self.cursor), source="manifold",
                            window_ms=60_000, backfill_ms=backfill_ms)
        self.feed = ManifoldFeed(api, self.session, self.fake.ws_url, delivery, self.sink,
                                 self.watch, **self.opts)
        self.task = asyncio.create_task(self.feed.run())
        await self.live()
        return self.feed

    async def live(self) -> None:
        assert self.feed is not None and self.task is not None
        for _ in range(600):
            if self.task.done():
                self.task.result()
            if self.feed.live.is_set():
                return
            await asyncio.sleep(0.05)
        raise AssertionError("the feed never went live")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        if self.session is not None:
            await self.session.close()

    def ids(self) -> list[str]:
        return [t["id"] for t in self.sink.ticks]

    async def until(self, n: int) -> None:
        for _ in range(600):
            if len(self.sink.ticks) >= n:
                await asyncio.sleep(0.1)  # and no more than n
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"{len(self.sink.ticks)} ticks, expected {n}")


@pytest.fixture
async def fake() -> AsyncIterator[FakeManifold]:
    server = FakeManifold(markets=recorded_markets())
    await server.start()
    yield server
    await server.stop()


async def test_dropped_websocket_loses_nothing_the_gap_is_filled_through_rest(
    fake: FakeManifold, tmp_path: Path
) -> None:
    maker = BetMaker()
    history = [maker.bet(BINARY) for _ in range(40)] + maker.restamp(recorded_bets())
    await fake.add_bets(history, push=False)
    h = Harness(fake, tmp_path / "cursor.json", Watch(all=True))
    feed = await h.start()
    try:
        expected = tickable(history)
        await h.until(len(expected))  # the backfill
        live = [maker.bet(MULTI) for _ in range(30)] + [maker.redemption(BINARY),
                                                        maker.unfilled(BINARY)]
        await fake.add_bets(live)
        expected += tickable(live)
        await h.until(len(expected))
        # mid-stream: half of a burst is pushed, then the connection is cut; the rest
        # is only in the database
        burst = [maker.bet(BINARY) for _ in range(50)]
        await fake.add_bets(burst[:25])
        await fake.drop()
        await fake.add_bets(burst[25:], push=False)
        expected += tickable(burst)
        await h.until(len(expected))
        assert fake.connections >= 2 and feed.stats.connects >= 2
        after = [maker.bet(BINARY) for _ in range(10)]
        await h.live()
        await fake.add_bets(after)
        expected += tickable(after)
        await h.until(len(expected))
    finally:
        await h.stop()
    assert sorted(h.ids()) == sorted(expected)  # every bet exactly once
    assert feed.stats.gap_items >= 25  # the burst's unpushed half came through REST
    assert feed.stats.skipped == 4  # recorded redemption + unfilled, and the live pair
    # metadata of both markets (and the answers) was sent once each
    assert {m.market for m in h.sink.metas} >= {BINARY, MULTI}


async def test_restart_resumes_from_the_cursor_without_gaps_or_repeats(
    fake: FakeManifold, tmp_path: Path
) -> None:
    maker = BetMaker()
    first = [maker.bet(BINARY) for _ in range(60)]
    await fake.add_bets(first, push=False)
    h = Harness(fake, tmp_path / "cursor.json", Watch(all=True))
    await h.start()
    await h.until(60)
    more = [maker.bet(BINARY) for _ in range(5)]
    await fake.add_bets(more)
    await h.until(65)
    await h.stop()
    assert sorted(h.ids()) == sorted(b["id"] for b in first + more)

    # while the feed is down: new bets, some in the same ms as the last delivered one
    down = [maker.bet(BINARY, same_ms=True)] + [maker.bet(MULTI) for _ in range(20)]
    await fake.add_bets(down)
    await h.start(backfill_ms=0)
    await h.until(21)
    await h.stop()
    assert sorted(h.ids()) == sorted(b["id"] for b in down)  # neither skipped nor repeated


async def test_watch_list_follows_named_markets_and_stops_polling_resolved_ones(
    fake: FakeManifold, tmp_path: Path
) -> None:
    maker = BetMaker()
    h = Harness(fake, tmp_path / "cursor.json",
                Watch(markets=("will-the-2024-atlantic-hurricane-sea", MULTI)),
                meta_refresh_s=0.3)
    await h.start()
    try:
        assert {m.market for m in h.sink.metas} >= {BINARY, MULTI}
        subscribed = set().union(*fake.sockets.values())
        assert subscribed == {f"contract/{BINARY}/new-bet", f"contract/{MULTI}/new-bet"}
        other = "zzOtherMarket0000000"
        bets = [maker.bet(BINARY), maker.bet(other), maker.bet(MULTI)]
        await fake.add_bets(bets)
        await h.until(2)
        assert sorted(h.ids()) == sorted([bets[0]["id"], bets[2]["id"]])
        # the binary market resolves: a refresh sees it, then it is polled no more
        fake.markets[BINARY] = {**fake.markets[BINARY], "isResolved": True,
                                "resolution": "NO", "resolutionTime": 1733000000000}
        for _ in range(100):
            if any(m.values.get("market/resolution") == "NO" for m in h.sink.metas):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the resolution was never sent")
        polled = len(fake.paths(f"/v0/market/{BINARY}"))
        await asyncio.sleep(1.0)  # three more refresh rounds
        assert len(fake.paths(f"/v0/market/{BINARY}")) == polled
        assert len(fake.paths(f"/v0/market/{MULTI}")) > 2  # still refreshed
    finally:
        await h.stop()


async def test_all_markets_refresh_through_the_updated_markets_list(
    fake: FakeManifold, tmp_path: Path
) -> None:
    maker = BetMaker()
    h = Harness(fake, tmp_path / "cursor.json", Watch(all=True), meta_refresh_s=0.3)
    await h.start()
    try:
        await fake.add_bets([maker.bet(BINARY), maker.bet(MULTI)])
        await h.until(2)
        for _ in range(100):  # first sight: one full fetch each
            if {m.market for m in h.sink.metas} >= {BINARY, MULTI}:
                break
            await asyncio.sleep(0.05)
        fake.markets[BINARY] = {**fake.markets[BINARY], "isResolved": True,
                                "resolution": "YES", "lastUpdatedTime": int(time.time() * 1000)}
        for _ in range(100):
            if any(m.values.get("market/resolution") == "YES" for m in h.sink.metas):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the resolution was never sent")
        await asyncio.sleep(1.0)
    finally:
        await h.stop()
    assert len(fake.paths(f"/v0/market/{BINARY}")) == 1  # the rest came from the list
    assert len(fake.paths("/v0/markets")) >= 3
    resolutions = [m for m in h.sink.metas
                   if m.market == BINARY and m.values.get("market/resolution") == "YES"]
    assert len(resolutions) == 1  # resolved: not refreshed again


async def test_pings_keep_the_connection_and_a_silent_server_is_left(
    fake: FakeManifold, tmp_path: Path
) -> None:
    h = Harness(fake, tmp_path / "cursor.json", Watch(all=True), ping_s=0.1)
    feed = await h.start()
    try:
        await asyncio.sleep(0.6)
        assert fake.pings >= 3
        fake.silent = True  # no acks: after 3 ping intervals the feed reconnects
        for _ in range(100):
            if fake.connections >= 2:
                break
            await asyncio.sleep(0.05)
        assert fake.connections >= 2
        fake.silent = False
        await h.live()
        assert feed.stats.connects >= 2
    finally:
        await h.stop()


async def test_bad_bets_go_to_the_dead_letter_output_with_a_reason(
    fake: FakeManifold, tmp_path: Path
) -> None:
    maker = BetMaker()
    good = maker.bet(BINARY)
    bad = {**maker.bet(BINARY), "probAfter": 1.7}
    h = Harness(fake, tmp_path / "cursor.json", Watch(all=True))
    await h.start()
    try:
        await fake.add_bets([bad, good])
        await h.until(1)
        for _ in range(50):
            if h.sink.dead:
                break
            await asyncio.sleep(0.05)
    finally:
        await h.stop()
    assert h.ids() == [good["id"]]
    [(raw, reason, detail)] = h.sink.dead
    assert reason == "bad_item" and "probAfter" in detail and bad["id"].encode() in raw


def test_watch_needs_all_or_markets() -> None:
    with pytest.raises(FeedError):
        Watch()
    with pytest.raises(FeedError):
        Watch(all=True, markets=("a",))
