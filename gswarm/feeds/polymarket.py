"""The live Polymarket feed: trades from the public data API, polled, mapped to ticks.

``GET /trades`` (newest first, ``limit``/``offset`` pages, ``market`` = comma-separated
condition ids for a watch list) is polled every ``GSWARM_FEED_POLL_S``; a poll reads pages
until it reaches trades older than the cursor's window, so a burst between polls is not
missed. A poll's trades are delivered in the API's order reversed, oldest first: the
timestamps are whole seconds, and within one second the API's order is the only one
there is, so the trade it lists first is the last tick, its market's latest. One tick per
trade:

* ``market`` = ``<conditionId>:<outcome>`` (each outcome token is its own price series),
* ``prob`` = ``price`` (the price of that outcome's share, in [0, 1]),
* ``ts`` = ``timestamp`` (seconds) x 1000, ``trader`` = ``proxyWallet``,
* ``volume`` = ``size`` x ``price`` (USDC), ``outcome`` = ``outcome``,
* ``id`` = a digest of the fields that tell trades apart (the API has no trade id, and one
  transaction can hold several fills).

The first trade seen of a market also sends its metadata (question = the trade's
``title`` and outcome, slug, url).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from typing import Any

from gswarm.core.meta import MarketMeta
from gswarm.errors import FeedError
from gswarm.feeds.http import JsonApi
from gswarm.feeds.live import GLOBAL, Delivery, oldest_first
from gswarm.feeds.replay import BadRow
from gswarm.feeds.sink import Sink

log = logging.getLogger(__name__)

SOURCE = "polymarket"
PAGE = 500
MAX_OFFSET = 10_000  # the API refuses deeper offsets
_ID_FIELDS = ("transactionHash", "asset", "proxyWallet", "side", "price", "size", "timestamp")


def check_condition_id(cid: str) -> None:
    """Raise :class:`FeedError` unless ``cid`` looks like a condition id (0x + 64 hex)."""
    if not (cid.startswith("0x") and len(cid) == 66
            and all(c in "0123456789abcdefABCDEF" for c in cid[2:])):
        raise FeedError(f"polymarket: {cid!r} is not a condition id (0x + 64 hex digits)")


def identify(trade: Any) -> tuple[str, int]:
    """(trade id, event time ms); :class:`BadRow` if the trade lacks what tells it apart."""
    if not isinstance(trade, dict):
        raise BadRow(f"not a JSON object: {type(trade).__name__}")
    missing = [f for f in _ID_FIELDS if trade.get(f) is None]
    if missing:
        raise BadRow(f"trade without {', '.join(missing)}")
    ts = trade["timestamp"]
    if type(ts) not in (int, float) or not 0 < ts < 2**40:
        raise BadRow(f"timestamp {ts!r} is not a time in seconds")
    digest = hashlib.blake2b("|".join(str(trade[f]) for f in _ID_FIELDS).encode(),
                             digest_size=12).hexdigest()
    return f"pm-{digest}", int(ts * 1000)


def market_of(trade: dict[str, Any]) -> str:
    cid, outcome = trade.get("conditionId"), trade.get("outcome")
    if not isinstance(cid, str) or not cid or not isinstance(outcome, str) or not outcome:
        raise BadRow("trade without a conditionId and outcome")
    market = f"{cid}:{outcome}"
    if len(market) > 200 or any(ord(c) < 32 for c in market):
        raise BadRow(f"bad market id {market[:60]!r}")
    return market


def to_tick(trade: Any) -> dict[str, Any]:
    """Map one trade to a tick; :class:`BadRow` names what is wrong."""
    trade_id, ts = identify(trade)
    price, size, wallet = trade.get("price"), trade.get("size"), trade.get("proxyWallet")
    if type(price) not in (int, float) or not 0.0 <= price <= 1.0:
        raise BadRow(f"price {price!r} is not in [0, 1]")
    if type(size) not in (int, float) or not size >= 0 or size == float("inf"):
        raise BadRow(f"size {size!r} is not a non-negative number")
    if not isinstance(wallet, str) or not wallet:
        raise BadRow("trade without a proxyWallet")
    return {
        "v": 1, "market": market_of(trade), "prob": float(price), "ts": ts,
        "volume": float(size) * float(price), "trader": wallet,
        "outcome": str(trade["outcome"]), "source": SOURCE, "id": trade_id,
    }


def trade_meta(trade: dict[str, Any], observed_ms: int) -> MarketMeta:
    title = trade.get("title") if isinstance(trade.get("title"), str) else None
    slug = trade.get("slug") if isinstance(trade.get("slug"), str) else None
    event = trade.get("eventSlug") if isinstance(trade.get("eventSlug"), str) else None
    values: dict[str, Any] = {
        "market/question": f"{title} — {trade['outcome']}"[:4000] if title else None,
        "market/slug": slug or None,
        "market/url": f"https://polymarket.com/event/{event}" if event else None,
    }
    return MarketMeta(market_of(trade), observed_ms, values)


class PolymarketFeed:
    """Polls the newest trades until cancelled."""

    def __init__(
        self, api: JsonApi, delivery: Delivery, sink: Sink, *, markets: tuple[str, ...],
        poll_s: float,
    ) -> None:
        for cid in markets:
            check_condition_id(cid)
        self.api, self.delivery, self.sink = api, delivery, sink
        self.markets, self.poll_s = markets, poll_s
        self.known: set[str] = set()
        self.stats = delivery.stats
        self.polls = 0

    async def run(self) -> None:
        await self.delivery.load([GLOBAL])
        while True:
            try:
                await self.poll()
            except FeedError as exc:  # the API is down or confused: try again next time
                log.warning("polymarket: poll failed: %s", exc)
            await asyncio.sleep(self.poll_s)

    async def poll(self) -> int:
        """Read the trades since the cursor's window and deliver the new ones."""
        since = self.delivery.since(GLOBAL)
        params: dict[str, str | int] = {"limit": PAGE, "takerOnly": "true"}
        if self.markets:
            params["market"] = ",".join(self.markets)
        trades: list[Any] = []
        offset = 0
        while True:
            page = await self.api.get("/trades", {**params, "offset": offset})
            if not isinstance(page, list):
                raise FeedError(f"/trades answered a {type(page).__name__}, not a list")
            trades += page
            times = [t["timestamp"] for t in page if isinstance(t, dict) and type(
                t.get("timestamp")) in (int, float)]
            if len(page) < PAGE or not times or min(times) * 1000 < since:
                break
            if offset + PAGE > MAX_OFFSET:
                log.warning("polymarket: more than %d new trades since the last poll; the "
                            "oldest may be missed (poll more often)", MAX_OFFSET)
                break
            offset += PAGE
        trades = oldest_first(trades, _timestamp)
        self.polls += 1
        ticks = await self.delivery.deliver(GLOBAL, trades, identify, to_tick)
        now = int(time.time() * 1000)
        fresh = {t["market"] for t in ticks} - self.known
        if fresh:
            by_market = {m: t for t in trades if isinstance(t, dict)
                         and (m := _maps(t)) in fresh}
            for market in sorted(fresh):
                await self.sink.send_meta(trade_meta(by_market[market], now))
            await self.sink.flush()
            self.stats.metas += len(fresh)
            self.known |= fresh
        return len(ticks)


def _timestamp(trade: Any) -> float:
    ts = trade.get("timestamp") if isinstance(trade, dict) else None
    return float(ts) if isinstance(ts, int | float) and not isinstance(ts, bool) else 0.0


def _maps(trade: dict[str, Any]) -> str | None:
    try:
        return market_of(trade)
    except BadRow:
        return None
