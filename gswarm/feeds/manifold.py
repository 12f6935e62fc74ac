"""The live Manifold Markets feed: websocket for new bets, REST to backfill and fill gaps.

* **Live**: ``wss://api.manifold.markets/ws``, subscribed to ``global/new-bet`` (``--all``)
  or ``contract/{id}/new-bet`` per watched market; a ping every ``GSWARM_FEED_PING_S``
  (at most 30 s); a connection silent for three ping intervals is dropped and remade.
  Reconnects wait a jittered exponential back-off.
* **REST**: on every (re)connect, after subscribing, ``GET /v0/bets`` pages (newest first,
  ``afterTime``/``beforeTime`` windows of up to 1000 bets) fill the gap from each scope's
  cursor, so nothing said while disconnected is missed; bets the socket pushes meanwhile
  wait in its buffer and are de-duplicated by id. Every request honours the requests-per-
  minute budget (:class:`~gswarm.feeds.http.JsonApi`).
* **Mapping**: one tick per bet, ``prob`` = ``probAfter`` (see
  :func:`gswarm.feeds.replay.bet_tick`); redemptions and limit orders with no fill are not
  ticks; a multiple-choice answer is its own market ``<contractId>:<answerId>``.
* **Metadata**: ``GET /v0/market/{id}`` for each watched market and each market first seen
  in a bet, sent as ``market`` control messages (question, slug, url, outcome type, close
  time, resolution); refreshed every ``GSWARM_FEED_META_REFRESH_S`` (a watch list: each
  watched market; ``--all``: ``GET /v0/markets`` sorted by update time, down to the last
  round); a resolved market is no longer polled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from gswarm.core.meta import MarketMeta, parse_meta
from gswarm.errors import FeedError, TickError
from gswarm.feeds.http import JsonApi, NotFound, backoff
from gswarm.feeds.live import GLOBAL, Delivery, oldest_first, run_all
from gswarm.feeds.replay import BadRow, bet_tick
from gswarm.feeds.sink import Sink

log = logging.getLogger(__name__)

SOURCE = "manifold"
PAGE = 1000  # bets per REST page (the documented maximum)
ACK_TIMEOUT_S = 10.0  # the subscription ack must come within this (or 3 ping intervals)


# -- REST --------------------------------------------------------------------------------


class ManifoldApi:
    """The REST endpoints the feed uses."""

    def __init__(self, api: JsonApi) -> None:
        self.api = api

    async def bets_since(self, since_ms: int, contract: str | None = None) -> list[Any]:
        """Every bet created at or after ``since_ms`` (of one market, or all), oldest first.

        Pages newest first; each next page asks for bets before the oldest time seen plus
        one ms, so bets sharing that millisecond are read again and de-duplicated by id
        rather than skipped (the API's time bounds are strict). The bets come back in the
        API's order reversed, so bets of one millisecond keep its order backwards (the
        newest, listed first, is the last).
        """
        params: dict[str, str | int] = {"limit": PAGE}
        if since_ms > 0:
            params["afterTime"] = since_ms - 1
        if contract is not None:
            params["contractId"] = contract
        found: dict[str, Any] = {}
        before: int | None = None
        while True:
            query = dict(params) if before is None else {**params, "beforeTime": before}
            page = await self.api.get("/v0/bets", query)
            if not isinstance(page, list):
                raise FeedError(f"/v0/bets answered a {type(page).__name__}, not a list")
            for bet in page:
                bid = bet.get("id") if isinstance(bet, dict) else None
                found.setdefault(bid if isinstance(bid, str) else orjson.dumps(bet).decode(),
                                 bet)
            if len(page) < PAGE:
                break
            oldest = min((_created(b) for b in page), default=0)
            step = oldest + 1
            if before is not None and step >= before:
                log.warning("manifold: more than %d bets at %d ms; some may be missed",
                            PAGE, oldest)
                step = oldest
            before = step
        return oldest_first(found.values(), _created)

    async def markets_updated_since(self, since_ms: int) -> list[Any]:
        """Markets (LiteMarket: no answers) updated at or after ``since_ms``, newest first.

        One request per 1000 markets, where fetching each market would take one each.
        """
        found: list[Any] = []
        params: dict[str, str | int] = {"limit": PAGE, "sort": "updated-time", "order": "desc"}
        while True:
            page = await self.api.get("/v0/markets", params)
            if not isinstance(page, list):
                raise FeedError(f"/v0/markets answered a {type(page).__name__}, not a list")
            fresh = [m for m in page if isinstance(m, dict) and _updated(m) >= since_ms]
            found += fresh
            last = page[-1] if page else None
            if len(page) < PAGE or len(fresh) < len(page) or not isinstance(last, dict) or (
                    not isinstance(last.get("id"), str)):
                return found
            params = {**params, "before": last["id"]}

    async def market(self, market_id: str) -> Any:
        return await self.api.get(f"/v0/market/{urllib.parse.quote(market_id, safe='')}")

    async def slug(self, slug: str) -> Any:
        return await self.api.get(f"/v0/slug/{urllib.parse.quote(slug, safe='')}")

    async def find(self, name: str) -> Any:
        """A market by slug, else by id; :class:`FeedError` if neither is known."""
        try:
            return await self.slug(name)
        except NotFound:
            pass
        try:
            return await self.market(name)
        except NotFound:
            raise FeedError(f"manifold: no market has the slug or id {name!r}") from None


def _updated(market: dict[str, Any]) -> int:
    ts = market.get("lastUpdatedTime")
    return ts if type(ts) is int else 0


def _created(bet: Any) -> int:
    ts = bet.get("createdTime") if isinstance(bet, dict) else None
    return ts if type(ts) is int else 0


def identify(bet: Any) -> tuple[str, int]:
    """(bet id, createdTime) of a bet; :class:`BadRow` when either is missing."""
    if not isinstance(bet, dict):
        raise BadRow(f"not a JSON object: {type(bet).__name__}")
    bid, ts = bet.get("id"), bet.get("createdTime")
    if not isinstance(bid, str) or not bid:
        raise BadRow("bet without an id")
    if not isinstance(ts, int | float) or isinstance(ts, bool) or ts <= 0:
        raise BadRow(f"bet {bid} without a createdTime")
    return bid, int(ts)


def to_tick(bet: Any) -> dict[str, Any] | None:
    return bet_tick(bet, None)


# -- metadata ----------------------------------------------------------------------------


def market_meta(market: Any, observed_ms: int) -> list[MarketMeta]:
    """The metadata messages of a market (and of each answer of a multiple-choice one).

    Raises :class:`FeedError` if the document is not a market.
    """
    if not isinstance(market, dict) or not isinstance(market.get("id"), str):
        raise FeedError(f"not a Manifold market: {str(market)[:200]}")
    cid = market["id"]
    values: dict[str, Any] = {
        "market/question": _str(market.get("question")),
        "market/slug": _str(market.get("slug")),
        "market/url": _str(market.get("url")),
        "market/outcome_type": _str(market.get("outcomeType")),
        "market/close_time": _ms(market.get("closeTime")),
        "market/resolution": _str(market.get("resolution")),
        "market/resolution_time": _ms(market.get("resolutionTime")),
    }
    docs = [{"market": cid, "ts": observed_ms, "meta": values}]
    for answer in market.get("answers") or []:
        if not isinstance(answer, dict) or not isinstance(answer.get("id"), str):
            continue
        text = _str(answer.get("text")) or answer["id"]
        docs.append({"market": f"{cid}:{answer['id']}", "ts": observed_ms, "meta": {
            **values,
            "market/question": f"{values['market/question'] or cid} — {text}"[:4000],
            "market/resolution": _str(answer.get("resolution")) or values["market/resolution"],
            "market/resolution_time": _ms(answer.get("resolutionTime"))
            or _ms(market.get("resolutionTime")),
        }})
    metas = []
    for doc in docs:
        try:
            metas.append(parse_meta(doc, None))
        except TickError as exc:
            raise FeedError(f"market {cid}: {exc}") from exc
    return metas


def is_resolved(market: Any) -> bool:
    return isinstance(market, dict) and bool(market.get("isResolved"))


def _str(value: Any) -> str | None:
    return value[:4000] if isinstance(value, str) and value else None


def _ms(value: Any) -> int | None:
    if type(value) in (int, float) and 0 < value < 2**62:
        return int(value)
    return None


# -- the feed ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Watch:
    """What to follow: every public market, or the markets named (slugs or ids)."""

    all: bool = False
    markets: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.all == bool(self.markets):
            raise FeedError("give either --all or --markets slug1,slug2 (not both, not none)")


class ManifoldFeed:
    """Runs until cancelled: live bets, gap fills, metadata; see the module docstring."""

    def __init__(
        self, api: ManifoldApi, session: aiohttp.ClientSession, ws_url: str,
        delivery: Delivery, sink: Sink, watch: Watch, *, ping_s: float, retry_s: float,
        meta_refresh_s: float,
    ) -> None:
        self.api, self.session, self.ws_url = api, session, ws_url
        self.delivery, self.sink, self.watch = delivery, sink, watch
        self.ping_s, self.retry_s, self.meta_refresh_s = ping_s, retry_s, meta_refresh_s
        self.watched: dict[str, str] = {}  # contract id -> the name the user gave
        self.resolved: set[str] = set()
        self.known: set[str] = set()  # markets whose metadata was sent
        self.new_markets: asyncio.Queue[str] = asyncio.Queue()
        self.stats = delivery.stats
        self.live = asyncio.Event()  # set while subscribed and caught up
        self._txid = 0
        self._last_seen = 0.0

    async def run(self) -> None:
        await self.resolve_watch()
        scopes = [GLOBAL] if self.watch.all else [
            cid for cid in self.watched if cid not in self.resolved]
        if not scopes:
            raise FeedError("manifold: every watched market is resolved: nothing to follow")
        await self.delivery.load(scopes)
        await run_all(self.follow(), self.metadata())

    async def resolve_watch(self) -> None:
        """Look up each watched market (slug or id) and send its metadata."""
        for name in self.watch.markets:
            market = await self.api.find(name)
            cid = market.get("id") if isinstance(market, dict) else None
            if not isinstance(cid, str):
                raise FeedError(f"manifold: {name!r} answered without a market id")
            self.watched[cid] = name
            await self.send_meta(market)
            if cid in self.resolved:
                log.info("manifold: %s (%s) is resolved: its bets are not followed", name, cid)

    # -- websocket ---------------------------------------------------------------------

    def topics(self) -> list[str]:
        if self.watch.all:
            return ["global/new-bet"]
        return [f"contract/{cid}/new-bet" for cid in self.delivery.scopes]

    async def follow(self) -> None:
        """Connect, subscribe, fill the gap through REST, then deliver pushed bets; repeat."""
        attempt = 0
        while True:
            try:
                async with self.session.ws_connect(self.ws_url, autoping=True) as ws:
                    early = await self.subscribe(ws)
                    attempt = 0
                    self.stats.connects += 1
                    log.info("manifold: connected to %s, subscribed to %d topics",
                             self.ws_url, len(self.topics()))
                    pinger = asyncio.create_task(self.ping(ws))
                    try:
                        await self.catch_up()
                        for data in early:
                            await self.on_message(data)
                        self.live.set()
                        async for msg in ws:
                            if msg.type == aiohttp.WSMsgType.TEXT:
                                self._last_seen = time.monotonic()
                                await self.on_message(msg.data)
                            elif msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                                break
                    finally:
                        self.live.clear()
                        pinger.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await pinger
                log.warning("manifold: websocket closed; reconnecting")
            except (aiohttp.ClientError, TimeoutError, ConnectionError, FeedError) as exc:
                log.warning("manifold: %s: %s; reconnecting", type(exc).__name__, exc)
            delay = backoff(attempt, self.retry_s, 60.0)
            attempt += 1
            await asyncio.sleep(delay)

    def _next_txid(self) -> int:
        self._txid += 1
        return self._txid

    async def subscribe(self, ws: aiohttp.ClientWebSocketResponse) -> list[str]:
        """Subscribe and wait for the ack; return messages that came before it."""
        txid = self._next_txid()
        await ws.send_str(orjson.dumps(
            {"type": "subscribe", "txid": txid, "topics": self.topics()}).decode())
        early: list[str] = []
        async with asyncio.timeout(min(ACK_TIMEOUT_S, 3 * self.ping_s)):
            while True:
                msg = await ws.receive()
                if msg.type != aiohttp.WSMsgType.TEXT:
                    raise FeedError(f"websocket ended before the subscription ack ({msg.type})")
                doc = _json(msg.data)
                if doc.get("type") == "ack" and doc.get("txid") == txid:
                    if not doc.get("success", False):
                        raise FeedError(f"subscription refused: {doc.get('error')}")
                    self._last_seen = time.monotonic()
                    return early
                early.append(msg.data)

    async def ping(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Ping every ``ping_s``; close a connection that stays silent for 3 intervals."""
        while True:
            await asyncio.sleep(self.ping_s)
            if time.monotonic() - self._last_seen > 3 * self.ping_s:
                log.warning("manifold: websocket silent for %.0fs; reconnecting",
                            time.monotonic() - self._last_seen)
                await ws.close()
                return
            await ws.send_str(orjson.dumps({"type": "ping", "txid": self._next_txid()}).decode())

    async def on_message(self, data: str) -> None:
        doc = _json(data)
        topic = doc.get("topic")
        if doc.get("type") != "broadcast" or not isinstance(topic, str) or not topic.endswith(
                "/new-bet"):
            return
        bets = (doc.get("data") or {}).get("bets") if isinstance(doc.get("data"), dict) else None
        if not isinstance(bets, list):
            await self.delivery.dead_letter(data.encode(), "broadcast without bets")
            await self.sink.flush()
            return
        scope = GLOBAL if topic.startswith("global/") else topic.split("/")[1]
        if scope in self.delivery.scopes:
            await self.deliver(scope, bets)

    async def catch_up(self) -> None:
        """REST: every bet since each scope's cursor (after a reconnect: the gap)."""
        for scope in list(self.delivery.scopes):
            if scope in self.resolved:
                continue
            bets = await self.api.bets_since(self.delivery.since(scope),
                                             None if scope == GLOBAL else scope)
            ticks = await self.deliver(scope, bets)
            if self.stats.connects > 1:
                self.stats.gap_items += len(ticks)
            log.info("manifold: %s: %d bets read through REST", scope, len(bets))

    async def deliver(self, scope: str, bets: list[Any]) -> list[dict[str, Any]]:
        ticks = await self.delivery.deliver(scope, bets, identify, to_tick)
        for bet in bets:
            cid = bet.get("contractId") if isinstance(bet, dict) else None
            if isinstance(cid, str) and cid and cid not in self.known and (
                    cid not in self.watched):
                self.known.add(cid)
                self.new_markets.put_nowait(cid)
        return ticks

    # -- metadata --------------------------------------------------------------------

    async def metadata(self) -> None:
        """Fetch new markets' metadata at once; refresh followed markets periodically.

        A watch list refreshes each unresolved watched market (``/v0/market/{id}``);
        ``--all`` lists the markets updated since the last round (``/v0/markets``, newest
        first) and refreshes those it has seen that are not resolved.
        """
        deadline = time.monotonic() + self.meta_refresh_s
        last_round = int(time.time() * 1000)
        while True:
            try:
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    cid = await self.new_markets.get()
                await self.fetch_meta(cid)
            except TimeoutError:
                started = int(time.time() * 1000)
                if self.watch.all:
                    await self.refresh_updated(last_round - 1000)
                else:
                    for cid in sorted(set(self.watched) - self.resolved):
                        await self.fetch_meta(cid)
                last_round = started
                deadline = time.monotonic() + self.meta_refresh_s

    async def refresh_updated(self, since_ms: int) -> None:
        try:
            updated = await self.api.markets_updated_since(since_ms)
        except FeedError as exc:
            log.warning("manifold: listing updated markets: %s (next refresh retries)", exc)
            return
        for market in updated:
            cid = market.get("id")
            if cid not in self.known or cid in self.resolved:
                continue
            if is_resolved(market) and market.get("outcomeType") != "BINARY":
                await self.fetch_meta(cid)  # the full market: its answers' resolutions
                continue
            try:
                await self.send_meta(market)
            except FeedError as exc:
                log.warning("manifold: metadata of %s: %s", cid, exc)

    async def fetch_meta(self, cid: str) -> None:
        try:
            market = await self.api.market(cid)
        except NotFound:
            log.warning("manifold: market %s is not found; no longer polled", cid)
            self.resolved.add(cid)
            return
        except FeedError as exc:
            log.warning("manifold: metadata of %s: %s (next refresh retries)", cid, exc)
            return
        try:
            await self.send_meta(market)
        except FeedError as exc:
            await self.delivery.dead_letter(market, str(exc))
            await self.sink.flush()

    async def send_meta(self, market: Any) -> None:
        metas = market_meta(market, int(time.time() * 1000))
        for meta in metas:
            await self.sink.send_meta(meta)
        await self.sink.flush()
        self.stats.metas += len(metas)
        self.known.add(metas[0].market)
        if is_resolved(market):
            if metas[0].market not in self.resolved:
                log.info("manifold: market %s resolved (%s): no longer polled",
                         metas[0].market, market.get("resolution"))
            self.resolved.add(metas[0].market)


def _json(data: str) -> dict[str, Any]:
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        return {}
    return doc if isinstance(doc, dict) else {}
