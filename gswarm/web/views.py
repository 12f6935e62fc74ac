"""The JSON API on Faust's web server (read-only).

Requests about one market are routed to the worker that owns its partition
(``app.table_route``); bad parameters get a 4xx with a JSON ``{"error": ...}`` body.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
from collections.abc import Awaitable, Callable
from typing import Any, cast

import aiohttp
from aiokafka.partitioner import murmur2

from gswarm.core.sketches.state import MergedSketches, PartitionSketches
from gswarm.errors import NotFoundError, QueryError
from gswarm.store import queries
from gswarm.stream.app import app, settings
from gswarm.stream.factstore import FactStore
from gswarm.stream.pipeline import counters
from gswarm.stream.tables import SKETCH_KEY, facts, sketches

Handler = Callable[..., Awaitable[Any]]


def json_errors(handler: Handler) -> Handler:
    """Turn query errors into 4xx JSON answers; nothing escapes as a 500 with a traceback."""

    @functools.wraps(handler)
    async def wrapper(web: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await handler(web, request, *args, **kwargs)
        except NotFoundError as exc:
            return web.json({"error": str(exc)}, status=404)
        except QueryError as exc:
            return web.json({"error": str(exc)}, status=400)
        except Unavailable as exc:
            return web.json({"error": str(exc)}, status=503)

    return wrapper


class Unavailable(Exception):
    """The partition is not served by this worker right now (rebalancing, recovering)."""


def store() -> FactStore:
    data = facts.data
    assert isinstance(data, FactStore)
    return data


def recovering() -> bool:
    """True while tables are being restored (after start or a rebalance)."""
    recovery = cast(Any, app.tables).recovery
    return bool(recovery.in_recovery or not recovery.completed.is_set())


def owned_partitions() -> list[int]:
    """Partitions this worker serves: actively assigned, tables fully recovered."""
    if recovering():
        return []
    topic = facts.changelog_topic.get_topic_name()
    return sorted(tp.partition for tp in app.assignor.assigned_actives() if tp.topic == topic)


def all_dbs() -> list[Any]:
    return [store().db(p) for p in owned_partitions()]


def market_db(market: str) -> Any:
    queries.check_market(market)
    partition = (murmur2(market.encode()) & 0x7FFFFFFF) % settings.partitions
    if partition not in owned_partitions():
        state = "recovering" if recovering() else "not served here"
        raise Unavailable(f"partition {partition} of {market!r} is {state}; retry shortly")
    return store().db(partition)


def _param(request: Any, name: str, default: Any, parse: Callable[[str], Any], kind: str) -> Any:
    raw = request.query.get(name)
    if raw is None or raw == "":
        if default is None:
            raise QueryError(f"parameter {name!r} is required")
        return default
    try:
        value = parse(raw)
    except ValueError:
        raise QueryError(f"parameter {name!r} must be {kind}, got {raw[:40]!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise QueryError(f"parameter {name!r} must be finite")
    return value


def _int(request: Any, name: str, default: int | None = None) -> int:
    return int(_param(request, name, default, int, "an integer"))


def _float(request: Any, name: str, default: float | None = None) -> float:
    return float(_param(request, name, default, float, "a number"))


def local_sketch_bytes() -> dict[int, bytes]:
    """The stored sketch value of each partition this worker owns."""
    out = {}
    for p in owned_partitions():
        raw = cast(Any, sketches.data)._db_for_partition(p).get(SKETCH_KEY)
        if raw is not None:
            out[p] = raw
    return out


async def cluster_sketches() -> MergedSketches:
    """Sketches of every partition: this worker's, plus each other worker's (over HTTP)."""
    parts = {p: PartitionSketches.from_bytes(b) for p, b in local_sketch_bytes().items()}
    me = str(app.conf.canonical_url).rstrip("/")
    peers = {str(url).rstrip("/") for url in app.router.tables_metadata()} - {me}
    answers = await asyncio.gather(*(_peer_sketches(url) for url in sorted(peers)))
    for remote in answers:
        for p, raw in remote.items():
            parts.setdefault(p, PartitionSketches.from_bytes(raw))
    return MergedSketches.of([parts[p] for p in sorted(parts)])


async def _peer_sketches(url: str) -> dict[int, bytes]:
    try:
        timeout = aiohttp.ClientTimeout(total=5)
        async with app.http_client.get(f"{url}/api/sketches/local", timeout=timeout) as resp:
            doc = await resp.json()
    except (TimeoutError, OSError, ValueError) as exc:
        raise Unavailable(f"worker {url} did not answer: {exc!r}") from None
    return {int(p): base64.b64decode(v["bytes"]) for p, v in doc["partitions"].items()}


@app.page("/api/health")
async def health(web: Any, request: Any) -> Any:
    status = "recovering" if recovering() else "ok"
    return web.json({"status": status, "partitions": owned_partitions()})


@app.page("/api/stats")
@json_errors
async def stats(web: Any, request: Any) -> Any:
    merged = await cluster_sketches()
    return web.json({
        **counters.snapshot(), "partitions": owned_partitions(),
        "unique_markets": merged.markets.estimate(),
        "unique_traders": merged.traders.estimate(),
        "sketched_ticks": merged.ticks,
    })


@app.page("/api/sketches/local")
async def sketches_local(web: Any, request: Any) -> Any:
    """This worker's partition sketches: offset, digest and bytes (for merges and checks)."""
    out = {}
    for p, raw in local_sketch_bytes().items():
        state = PartitionSketches.from_bytes(raw)
        out[str(p)] = {"last_offset": state.last_offset, "ticks": state.ticks,
                       "sha256": hashlib.sha256(raw).hexdigest(),
                       "bytes": base64.b64encode(raw).decode()}
    return web.json({"partitions": out})


@app.page("/api/hot")
@json_errors
async def hot(web: Any, request: Any) -> Any:
    """Top-k markets by tick count (Count-Min), overall or in the last ``window`` seconds."""
    k = _int(request, "k", 10)
    if not 1 <= k <= 1000:
        raise QueryError(f"k must be in [1, 1000], got {k}")
    window = request.query.get("window")
    merged = await cluster_sketches()
    window_ms = None
    if window is not None:
        window_ms = int(_float(request, "window") * 1000)
        span = merged.window.span_ms
        if not 0 < window_ms <= span:
            raise QueryError(f"window must be in (0, {span // 1000}] seconds")
    return web.json({
        "window_s": None if window_ms is None else window_ms / 1000,
        "unique_traders": merged.unique_traders(window_ms),
        "markets": [{"market": m, "ticks": n} for m, n in merged.hot(k, window_ms)],
    })


@app.page("/api/markets/{market}")
@app.table_route(table=facts, match_info="market")
@json_errors
async def market_latest(web: Any, request: Any, market: str) -> Any:
    return web.json(queries.latest([market_db(market)], market))


@app.page("/api/markets/{market}/history")
@app.table_route(table=facts, match_info="market")
@json_errors
async def market_history(web: Any, request: Any, market: str) -> Any:
    db = market_db(market)
    queries.record([db], market)  # 404 for an unknown market
    rows = queries.series(
        db, market, request.query.get("attr", "tick/probability"),
        _int(request, "from", 0), _int(request, "to", queries.MAX_TS),
        _int(request, "limit", 1000),
    )
    return web.json({"market": market, "points": rows})


@app.page("/api/markets/{market}/asof")
@app.table_route(table=facts, match_info="market")
@json_errors
async def market_asof(web: Any, request: Any, market: str) -> Any:
    db = market_db(market)
    queries.record([db], market)
    attr = request.query.get("attr", "tick/probability")
    return web.json({"market": market, "attr": attr,
                     "datom": queries.asof(db, market, attr, _int(request, "t"))})


@app.page("/api/markets/{market}/since")
@app.table_route(table=facts, match_info="market")
@json_errors
async def market_since(web: Any, request: Any, market: str) -> Any:
    db = market_db(market)
    queries.record([db], market)
    datoms = queries.since(db, market, _int(request, "ts"),
                           _int(request, "seq", queries.MAX_SEQ),
                           _int(request, "limit", 1000))
    return web.json({"market": market, "datoms": datoms})


@app.page("/api/markets")
@json_errors
async def market_search(web: Any, request: Any) -> Any:
    found = queries.search(all_dbs(), request.query.get("prefix", ""),
                           _int(request, "limit", 100))
    return web.json({"markets": found})


@app.page("/api/similar/{market}")
@json_errors
async def similar_market(web: Any, request: Any, market: str) -> Any:
    hits = queries.similar(all_dbs(), market=market, k=_int(request, "k", 10),
                           min_score=_float(request, "min", -1.0))
    return web.json({"market": market, "similar": hits})


@app.page("/api/similar")
@json_errors
async def similar_vector(web: Any, request: Any) -> Any:
    raw = request.query.get("vector", "")
    try:
        vector = [float(x) for x in raw.split(",")] if raw else None
    except ValueError:
        raise QueryError("vector must be comma-separated numbers") from None
    if vector is None:
        raise QueryError("parameter 'vector' is required")
    hits = queries.similar(all_dbs(), vector=vector, k=_int(request, "k", 10),
                           min_score=_float(request, "min", -1.0))
    return web.json({"similar": hits})


@app.page("/api/screen")
@json_errors
async def screen(web: Any, request: Any) -> Any:
    component = request.query.get("component", "")
    hits = queries.screen(all_dbs(), component, request.query.get("op", "gt"),
                          _float(request, "value"), _int(request, "limit", 100))
    return web.json({"component": component, "markets": hits})


@app.page("/api/storage")
async def storage(web: Any, request: Any) -> Any:
    """Keys held per partition (datoms, segments, markets): to watch memory stay bounded."""
    out = {}
    for p in owned_partitions():
        counts = {"F": 0, "S": 0, "M": 0}
        it = store().db(p).iter()
        it.seek_to_first()
        while it.valid():
            kind = it.key()[:1].decode(errors="replace")
            if kind in counts:
                counts[kind] += 1
            it.next()
        out[str(p)] = {"datoms": counts["F"], "segments": counts["S"], "markets": counts["M"]}
    return web.json({"partitions": out})


@app.page("/api/cluster")
async def cluster(web: Any, request: Any) -> Any:
    """This worker's view: its partitions (active, standby), the leader flag, lag, peers."""
    topic = settings.tick_topic
    actives = sorted(tp.partition for tp in app.assignor.assigned_actives() if tp.topic == topic)
    changelog = facts.changelog_topic.get_topic_name()
    standbys = sorted(
        tp.partition for tp in app.assignor.assigned_standbys() if tp.topic == changelog)
    lag: dict[str, int | None] = {}
    for tp in app.assignor.assigned_actives():
        if tp.topic == topic:
            try:
                position = await app.consumer.position(tp)
                lag[str(tp.partition)] = max(app.consumer.highwater(tp) - (position or 0), 0)
            except Exception:  # not yet fetched: lag unknown
                lag[str(tp.partition)] = None
    workers = {
        str(url): sorted(
            p for t, parts in topics.items() if t == changelog for p in parts)
        for url, topics in app.router.tables_metadata().items()
    }
    return web.json({
        "worker": str(app.conf.canonical_url), "leader": app.is_leader(),
        "recovering": recovering(),
        "active": actives, "standby": standbys, "lag": lag, "workers": workers,
    })
