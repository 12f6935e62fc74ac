"""Local stand-ins for Manifold's and Polymarket's public APIs, served on 127.0.0.1.

They answer like the real services do (field names, newest-first pages, strict time bounds,
``{"message": ...}`` errors, the websocket's subscribe/ack/broadcast protocol) from
payloads recorded in ``fixtures/`` plus generated bets built on the same shape. Tests can
make them misbehave: answer 429, drop every websocket mid-stream, stay silent.
"""

from __future__ import annotations

import asyncio
import copy
import json
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from gswarm.ports import free_port

FIXTURES = Path(__file__).parent / "fixtures"
BETS_PARAMS = {"id", "userId", "username", "contractId", "contractSlug", "answerId", "limit",
               "before", "after", "beforeTime", "afterTime", "order", "kinds", "minAmount",
               "filterRedemptions", "includeZeroShareRedemptions", "excludeApi",
               "commentRepliesOnly", "count", "points"}


def recorded_bets() -> list[dict[str, Any]]:
    return list(json.loads((FIXTURES / "manifold_bets.json").read_text()))


def recorded_markets() -> dict[str, dict[str, Any]]:
    return dict(json.loads((FIXTURES / "manifold_markets.json").read_text()))


def recorded_trades() -> list[dict[str, Any]]:
    return list(json.loads((FIXTURES / "polymarket_trades.json").read_text()))


class BetMaker:
    """Realistic bets (a recorded market order as template) with fresh ids and times."""

    def __init__(self, seed: int = 7, start_ms: int | None = None) -> None:
        self.rng = random.Random(seed)
        self.template = recorded_bets()[0]
        self.ts = start_ms or int(time.time() * 1000) - 600_000
        self.n = 0
        self.prob: dict[str, float] = {}

    def bet(self, contract: str, *, same_ms: bool = False, **fields: Any) -> dict[str, Any]:
        self.n += 1
        if not same_ms:
            self.ts += self.rng.randint(1, 40)
        before = self.prob.get(contract, 0.5)
        after = min(0.99, max(0.01, before + self.rng.uniform(-0.03, 0.03)))
        self.prob[contract] = after
        bet = copy.deepcopy(self.template)
        bid = f"gen{self.n:06d}{self.rng.randrange(16**6):06x}"
        amount = round(self.rng.uniform(1, 100), 2)
        bet.update(id=bid, betId=bid, contractId=contract, createdTime=self.ts,
                   updatedTime=self.ts, amount=amount, orderAmount=amount,
                   probBefore=round(before, 4), probAfter=round(after, 4),
                   userId=f"u{self.rng.randrange(500):04d}", betGroupId=None)
        bet["fills"] = [{"matchedBetId": None, "amount": amount, "shares": amount * 1.5,
                         "timestamp": self.ts}]
        bet.update(fields)
        return bet

    def restamp(self, bets: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Copies of recorded bets moved to now, keeping their order and same-ms groups."""
        out = []
        old = sorted({b["createdTime"] for b in bets})
        new = {}
        for ts in old:
            self.ts += self.rng.randint(1, 40)
            new[ts] = self.ts
        for bet in bets:
            out.append({**copy.deepcopy(bet), "createdTime": new[bet["createdTime"]]})
        return out

    def redemption(self, contract: str) -> dict[str, Any]:
        return self.bet(contract, same_ms=True, isRedemption=True, amount=-1.0, fills=[])

    def unfilled(self, contract: str) -> dict[str, Any]:
        return self.bet(contract, limitProb=0.3, amount=0, fills=[], isFilled=False)


class LocalServer:
    """An aiohttp server on a free loopback port; subclasses name their routes."""

    def __init__(self) -> None:
        self.port = free_port()
        self.runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    async def start(self) -> None:
        app = web.Application()
        self.routes(app)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


class FakeManifold(LocalServer):
    """``/v0/bets``, ``/v0/market/{id}``, ``/v0/slug/{slug}`` and the ``/ws`` websocket."""

    def __init__(self, bets: list[dict[str, Any]] | None = None,
                 markets: dict[str, dict[str, Any]] | None = None) -> None:
        self.bets: list[dict[str, Any]] = list(bets or [])
        self.markets = dict(markets or {})
        self.requests: list[tuple[float, str, dict[str, str]]] = []  # (monotonic, path, query)
        self.throttle = 0  # answer this many more REST requests with 429
        self.silent = False  # stop answering on the websocket (no acks, no broadcasts)
        self.pings = 0
        self.connections = 0
        self.sockets: dict[web.WebSocketResponse, set[str]] = {}
        self._transports: dict[web.WebSocketResponse, Any] = {}
        super().__init__()

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/v0/bets", self.get_bets)
        app.router.add_get("/v0/markets", self.list_markets)
        app.router.add_get("/v0/market/{id}", self.get_market)
        app.router.add_get("/v0/slug/{slug}", self.get_slug)
        app.router.add_get("/ws", self.websocket)

    async def stop(self) -> None:
        for ws in list(self.sockets):
            await ws.close()
        await super().stop()

    def paths(self, prefix: str) -> list[dict[str, str]]:
        return [q for _, p, q in self.requests if p.startswith(prefix)]

    # -- REST ------------------------------------------------------------------------

    def _record(self, request: web.Request) -> web.Response | None:
        self.requests.append((time.monotonic(), request.path, dict(request.query)))
        if self.throttle > 0:
            self.throttle -= 1
            return web.json_response({"message": "Rate limit exceeded. Please wait 1 seconds "
                                                 "before trying again."}, status=429)
        return None

    async def get_bets(self, request: web.Request) -> web.Response:
        if (busy := self._record(request)) is not None:
            return busy
        q = request.query
        unknown = set(q) - BETS_PARAMS
        if unknown:
            return web.json_response({"message": "Error validating request.", "details": [
                {"field": k, "error": "Unrecognized key"} for k in unknown]}, status=400)
        limit = int(q.get("limit", 10000))
        if not 0 <= limit <= 10000:
            return web.json_response({"message": "limit too large"}, status=400)
        rows = [b for b in self.bets if "contractId" not in q or b["contractId"] == q[
            "contractId"]]
        if "afterTime" in q and int(q["afterTime"]):
            rows = [b for b in rows if b["createdTime"] > int(q["afterTime"])]
        if "beforeTime" in q:
            rows = [b for b in rows if b["createdTime"] < int(q["beforeTime"])]
        return web.json_response(self.listing(rows)[:limit],
                                 dumps=lambda o: orjson.dumps(o).decode())

    def listing(self, rows: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        """``rows`` (default: every bet) in the API's order: newest first; bets of one ms
        in an order of the database's own, not the insertion order (but always the same)."""
        rows = self.bets if rows is None else rows
        return sorted(rows, key=lambda b: (b["createdTime"], hash(b["id"]) % 97), reverse=True)

    async def list_markets(self, request: web.Request) -> web.Response:
        """LiteMarkets (no answers), by update time newest first; ``before`` = market id."""
        if (busy := self._record(request)) is not None:
            return busy
        q = request.query
        if q.get("sort") != "updated-time" or q.get("order", "desc") != "desc":
            return web.json_response({"message": "this fake sorts by updated-time desc"},
                                     status=400)
        rows = sorted(self.markets.values(), key=lambda m: m["lastUpdatedTime"], reverse=True)
        if "before" in q and q["before"] in self.markets:
            rows = [m for m in rows
                    if m["lastUpdatedTime"] < self.markets[q["before"]]["lastUpdatedTime"]]
        lite = [{k: v for k, v in m.items() if k not in ("answers", "description")}
                for m in rows[:int(q.get("limit", 500))]]
        return web.json_response(lite)

    async def get_market(self, request: web.Request) -> web.Response:
        if (busy := self._record(request)) is not None:
            return busy
        market = self.markets.get(request.match_info["id"])
        if market is None:
            return web.json_response({"message": "Contract not found"}, status=404)
        return web.json_response(market)

    async def get_slug(self, request: web.Request) -> web.Response:
        if (busy := self._record(request)) is not None:
            return busy
        for market in self.markets.values():
            if market.get("slug") == request.match_info["slug"]:
                return web.json_response(market)
        return web.json_response({"message": "Contract not found"}, status=404)

    # -- websocket -------------------------------------------------------------------

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self.connections += 1
        self.sockets[ws] = set()
        self._transports[ws] = request.transport
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT or self.silent:
                    continue
                doc = json.loads(msg.data)
                if doc.get("type") == "subscribe":
                    self.sockets[ws] |= set(doc["topics"])
                elif doc.get("type") == "ping":
                    self.pings += 1
                await ws.send_json({"type": "ack", "txid": doc.get("txid"), "success": True})
        finally:
            self.sockets.pop(ws, None)
            self._transports.pop(ws, None)
        return ws

    def subscribers(self) -> int:
        return sum(1 for topics in self.sockets.values() if topics)

    async def add_bets(self, bets: list[dict[str, Any]], *, push: bool = True) -> None:
        """Store bets (as the database would) and broadcast them to subscribers."""
        self.bets.extend(bets)
        if not push or self.silent:
            return
        for ws, topics in list(self.sockets.items()):
            for bet in bets:
                for topic in ("global/new-bet", f"contract/{bet['contractId']}/new-bet"):
                    if topic in topics:
                        await ws.send_json({"type": "broadcast", "topic": topic,
                                            "data": {"bets": [bet]}})

    async def drop(self) -> None:
        """Cut every websocket's TCP connection abruptly (no close frame)."""
        for transport in list(self._transports.values()):
            if transport is not None:
                transport.abort()
        await asyncio.sleep(0)


class FakePolymarket(LocalServer):
    """``/trades`` of the data API: newest first, ``limit``/``offset``, ``market`` filter."""

    def __init__(self, trades: list[dict[str, Any]] | None = None) -> None:
        self.trades = list(trades or [])
        self.requests: list[dict[str, str]] = []
        self.throttle = 0
        super().__init__()

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/trades", self.get_trades)

    async def get_trades(self, request: web.Request) -> web.Response:
        self.requests.append(dict(request.query))
        if self.throttle > 0:
            self.throttle -= 1
            return web.json_response({"error": "rate limited"}, status=429,
                                     headers={"Retry-After": "0.2"})
        q = request.query
        limit, offset = int(q.get("limit", 100)), int(q.get("offset", 0))
        if offset > 10000:
            return web.json_response({"error": "offset too large"}, status=400)
        rows = self.listing()
        if "market" in q:
            wanted = set(q["market"].split(","))
            rows = [t for t in rows if t["conditionId"] in wanted]
        return web.json_response(rows[offset:offset + min(limit, 10000)])

    def listing(self) -> list[dict[str, Any]]:
        """Every trade in the API's order: newest first, trades of one second too (the
        timestamps are whole seconds; ``trades`` is in the order they were made)."""
        return sorted(reversed(self.trades), key=lambda t: t["timestamp"], reverse=True)


class TradeMaker:
    """Realistic trades built on a recorded one, with fresh hashes and times."""

    def __init__(self, seed: int = 3, start_s: int | None = None) -> None:
        self.rng = random.Random(seed)
        self.template = recorded_trades()[0]
        self.ts = start_s or int(time.time()) - 300
        self.n = 0

    def trade(self, condition: str | None = None, outcome: str = "Yes", *,
              same_s: bool | None = None) -> dict[str, Any]:
        """The next trade: in the same second as the previous one if ``same_s`` (default:
        by a coin toss)."""
        self.n += 1
        same = self.rng.random() >= 0.5 if same_s is None else same_s
        if not same:
            self.ts += 1
        trade = copy.deepcopy(self.template)
        trade.update(
            transactionHash=f"0x{self.rng.randrange(16**64):064x}", timestamp=self.ts,
            price=round(self.rng.uniform(0.05, 0.95), 3), size=round(self.rng.uniform(1, 500), 2),
            proxyWallet=f"0x{self.rng.randrange(16**40):040x}", outcome=outcome,
            outcomeIndex=0 if outcome == "Yes" else 1,
        )
        if condition is not None:
            trade["conditionId"] = condition
        return trade

    def runs(self, count: int, conditions: Sequence[str], *, longest: int = 12,
             join: bool = False) -> list[dict[str, Any]]:
        """``count`` trades in runs of 1 to ``longest`` that share a second, each of a
        random condition and outcome (Yes/No); ``join``: the first run continues the
        second of the trade made before it."""
        out: list[dict[str, Any]] = []
        while len(out) < count:
            size = min(self.rng.randint(1, longest), count - len(out))
            for k in range(size):
                out.append(self.trade(self.rng.choice(conditions),
                                      self.rng.choice(("Yes", "No")),
                                      same_s=k > 0 or (join and not out)))
        return out
