"""The Polymarket trades feed against a local fake of its data API."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gswarm.errors import FeedError
from gswarm.feeds.cursor import FileCursors
from gswarm.feeds.http import JsonApi
from gswarm.feeds.live import Delivery
from gswarm.feeds.polymarket import PolymarketFeed, identify, to_tick
from gswarm.feeds.replay import BadRow
from tests.feeds.fake_apis import FakePolymarket, TradeMaker, recorded_trades
from tests.feeds.test_manifold import ListSink

pytestmark = pytest.mark.timeout(120)

FED = "0x9c4e2a7f1b3d5c8e0a6f2d4b7c9e1a3f5d7b9c2e4a6f8d0b1c3e5a7f9d2b4c6e"
OTHER = "0x" + "ab" * 32
CONDITIONS = tuple(f"0x{i:064x}" for i in range(1, 5))  # 4 conditions, 8 outcome markets


def per_market(ticks: Iterable[dict[str, Any]]) -> dict[str, list[str]]:
    """Each market's tick ids, in the order given."""
    out: dict[str, list[str]] = {}
    for tick in ticks:
        out.setdefault(tick["market"], []).append(tick["id"])
    return out


def api_reversed(fake: FakePolymarket) -> dict[str, list[str]]:
    """Each market's trade ids in the API's order reversed: the order ticks must have."""
    return per_market(to_tick(t) for t in reversed(fake.listing()))


def test_a_trade_maps_to_a_tick_of_its_outcome() -> None:
    yes, no = recorded_trades()
    tick = to_tick(yes)
    assert tick == {
        "v": 1, "market": f"{FED}:Yes", "prob": 0.634, "ts": 1767312485000,
        "volume": pytest.approx(250.0 * 0.634), "trader": yes["proxyWallet"],
        "outcome": "Yes", "source": "polymarket", "id": identify(yes)[0],
    }
    assert to_tick(no)["market"] == f"{FED}:No"
    assert identify(yes)[0] != identify(no)[0]
    # two fills of one transaction are two trades
    assert identify(yes)[0] != identify({**yes, "size": 10.0})[0]
    with pytest.raises(BadRow, match="price"):
        to_tick({**yes, "price": 1.5})
    with pytest.raises(BadRow, match="transactionHash"):
        to_tick({k: v for k, v in yes.items() if k != "transactionHash"})


@contextlib.asynccontextmanager
async def feed_on(fake: FakePolymarket, cursor: Path, markets: tuple[str, ...] = ()) -> (
        AsyncIterator[tuple[PolymarketFeed, ListSink]]):
    sink = ListSink()
    async with aiohttp.ClientSession() as session:
        api = JsonApi(fake.url, 60_000, session=session, backoff_s=0.05)
        delivery = Delivery(sink, FileCursors(cursor), source="polymarket",
                            window_ms=60_000, backfill_ms=3_600_000)
        feed = PolymarketFeed(api, delivery, sink, markets=markets, poll_s=0.1)
        await delivery.load(["global"])
        yield feed, sink


async def test_polls_deliver_each_trade_once_across_pages_429s_and_restarts(
    tmp_path: Path
) -> None:
    maker = TradeMaker()
    fake = FakePolymarket([maker.trade() for _ in range(1300)])  # three pages of 500
    await fake.start()
    try:
        cursor = tmp_path / "cursor.json"
        async with feed_on(fake, cursor) as (feed, sink):
            assert await feed.poll() == 1300
            assert len([q for q in fake.requests if q.get("offset")]) >= 2
            assert await feed.poll() == 0  # nothing new: nothing repeated
            fresh = [maker.trade(outcome="No") for _ in range(7)]
            fake.trades += fresh
            fake.throttle = 1
            assert await feed.poll() == 7
            # metadata once per market (outcome)
            assert sorted(m.market for m in sink.metas) == [f"{FED}:No", f"{FED}:Yes"]
            assert sink.metas[0].values["market/question"].startswith("Will the Fed cut")
            first = [t["id"] for t in sink.ticks]
        later = [maker.trade() for _ in range(11)]
        fake.trades += later
        async with feed_on(fake, cursor) as (feed, sink):  # a restart
            assert await feed.poll() == 11
            assert {t["id"] for t in sink.ticks} == {identify(t)[0] for t in later}
        assert len(set(first)) == len(first) == 1307
    finally:
        await fake.stop()


async def test_a_watch_list_asks_only_for_its_markets(tmp_path: Path) -> None:
    maker = TradeMaker()
    fake = FakePolymarket([maker.trade(), maker.trade(OTHER), maker.trade()])
    await fake.start()
    try:
        async with feed_on(fake, tmp_path / "c.json", (FED,)) as (feed, sink):
            assert await feed.poll() == 2
            assert fake.requests[0]["market"] == FED
            assert {t["market"] for t in sink.ticks} == {f"{FED}:Yes"}
    finally:
        await fake.stop()
    with pytest.raises(FeedError, match="condition id"):
        PolymarketFeed(None, None, None, markets=("fed-cut",), poll_s=1)  # type: ignore[arg-type]


async def test_same_second_trades_come_in_the_apis_order_reversed_across_pages_polls_restarts(
    tmp_path: Path
) -> None:
    maker = TradeMaker(seed=6)
    fake = FakePolymarket(maker.runs(1150, CONDITIONS))  # three pages of 500
    listing = fake.listing()
    # runs of one second straddle both page boundaries
    assert listing[499]["timestamp"] == listing[500]["timestamp"]
    assert listing[999]["timestamp"] == listing[1000]["timestamp"]
    ticks: list[dict[str, Any]] = []
    await fake.start()
    try:
        async with feed_on(fake, tmp_path / "c.json") as (feed, sink):
            assert await feed.poll() == 1150
            fake.trades += maker.runs(40, CONDITIONS, join=True)  # the last second goes on
            assert await feed.poll() == 40
            ticks += sink.ticks
        fake.trades += maker.runs(30, CONDITIONS, join=True)
        async with feed_on(fake, tmp_path / "c.json") as (feed, sink):  # resumes its cursor
            assert await feed.poll() == 30
            ticks += sink.ticks
    finally:
        await fake.stop()
    assert len(fake.requests) >= 5  # it paged
    assert per_market(ticks) == api_reversed(fake)
    assert len(api_reversed(fake)) == 8
    newest: dict[str, tuple[str, int]] = {}  # market -> (id, ts) of its newest trade
    for trade in fake.listing():
        newest.setdefault(to_tick(trade)["market"], identify(trade))
    latest = {t["market"]: t for t in ticks}  # a market's last tick is its latest
    assert {m: t["id"] for m, t in latest.items()} == {m: i for m, (i, _) in newest.items()}
    # some market's last second holds several of its trades (or this tests little)
    last_second = Counter((t["market"], t["ts"]) for t in ticks)
    assert any(last_second[m, ts] > 1 for m, (_, ts) in newest.items())
