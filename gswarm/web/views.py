"""The JSON API on Faust's web server (read-only).

Requests about one market are routed to the worker that owns its partition
(``app.table_route``); bad parameters get a 4xx with a JSON ``{"error": ...}`` body.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

import aiohttp
import aiohttp.web
import orjson
from aiokafka.partitioner import murmur2

from gswarm.core.sketches.state import MergedSketches, PartitionSketches
from gswarm.core.vectors import PartitionIndex, Screen
from gswarm.errors import NotFoundError, QueryError
from gswarm.store import queries
from gswarm.stream.agents import ingest
from gswarm.stream.app import app, settings
from gswarm.stream.factstore import FactStore
from gswarm.stream.pipeline import counters
from gswarm.stream.tables import SKETCH_KEY, facts, sketches
from gswarm.stream.vectors import Rebalanced
from gswarm.web import metrics, openapi

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


def local_sketches() -> dict[int, PartitionSketches]:
    """The current sketches of each partition this worker owns (live, not the last write)."""
    out = {}
    for p in owned_partitions():
        if p in ingest.sketches.live:
            out[p] = ingest.sketches.live[p]
        else:
            raw = cast(Any, sketches.data)._db_for_partition(p).get(SKETCH_KEY)
            if raw is not None:
                out[p] = PartitionSketches.from_bytes(raw)
    return out


async def cluster_sketches() -> MergedSketches:
    """Sketches of every partition: this worker's, plus each other worker's (over HTTP)."""
    parts = local_sketches()
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
        "vectors": {"markets": ingest.vectors.markets(),
                    "bytes": ingest.vectors.nbytes(),
                    "rebuilding": sorted(ingest.vectors.builds)},
    })


@app.page("/api/sketches/local")
async def sketches_local(web: Any, request: Any) -> Any:
    """This worker's partition sketches: offset, digest and bytes (for merges and checks)."""
    out = {}
    for p, state in local_sketches().items():
        raw = state.to_bytes()
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
        seconds, span = _float(request, "window"), merged.window.span_ms
        if not 0 < seconds <= span / 1000:  # checked before scaling: no overflow
            raise QueryError(f"window must be in (0, {span // 1000}] seconds")
        window_ms = max(int(seconds * 1000), 1)
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
    """A page of one attribute's series; ``next`` gives the parameters of the next page."""
    db = market_db(market)
    queries.check_known([db], market)  # 404 for an unknown market
    start, end = _int(request, "from", 0), _int(request, "to", queries.MAX_TS)
    limit = _int(request, "limit", 1000)
    after = request.query.get("after_seq")
    attr = request.query.get("attr", "tick/probability")
    rows = queries.series(db, market, attr, start, end, limit,
                          None if after is None else _int(request, "after_seq"))
    more = len(rows) == limit
    nxt = {"from": rows[-1]["ts"], "after_seq": rows[-1]["seq"]} if more else None
    return web.json({"market": market, "attr": attr, "points": rows, "next": nxt})


@app.page("/api/markets/{market}/asof")
@app.table_route(table=facts, match_info="market")
@json_errors
async def market_asof(web: Any, request: Any, market: str) -> Any:
    db = market_db(market)
    queries.check_known([db], market)
    attr = request.query.get("attr", "tick/probability")
    return web.json({"market": market, "attr": attr,
                     "datom": queries.asof(db, market, attr, _int(request, "t"))})


@app.page("/api/markets/{market}/since")
@app.table_route(table=facts, match_info="market")
@json_errors
async def market_since(web: Any, request: Any, market: str) -> Any:
    db = market_db(market)
    queries.check_known([db], market)
    datoms = queries.since(db, market, _int(request, "ts"),
                           _int(request, "seq", queries.MAX_SEQ),
                           _int(request, "limit", 1000))
    return web.json({"market": market, "datoms": datoms})


def peers() -> list[str]:
    """Web URLs of the other workers of the app (from the partition assignor)."""
    me = str(app.conf.canonical_url).rstrip("/")
    return sorted({str(url).rstrip("/") for url in app.router.tables_metadata()} - {me})


async def gather(path: str, params: dict[str, Any] | list[tuple[str, str]]) -> list[Any]:
    """GET ``path?local=1&params`` from every other worker (JSON documents); ``params``
    as a list of pairs may repeat a name."""
    pairs = [(k, str(v)) for k, v in (params.items() if isinstance(params, dict) else params)]

    async def one(url: str) -> Any:
        try:
            async with app.http_client.get(
                f"{url}{path}", params=[*pairs, ("local", "1")],
                timeout=aiohttp.ClientTimeout(total=10),
            ) as resp:
                if resp.status >= 400:
                    raise Unavailable(f"worker {url} answered {resp.status}")
                return await resp.json()
        except (TimeoutError, OSError, aiohttp.ClientError) as exc:
            raise Unavailable(f"worker {url} did not answer: {exc!r}") from None

    return list(await asyncio.gather(*(one(u) for u in peers())))


def _local(request: Any) -> bool:
    return bool(request.query.get("local") == "1")


@app.page("/api/markets")
@json_errors
async def market_search(web: Any, request: Any) -> Any:
    """Market ids starting with ``prefix``, across the cluster."""
    prefix, limit = request.query.get("prefix", ""), _int(request, "limit", 100)
    found = queries.search(all_dbs(), prefix, limit)
    if not _local(request):
        for doc in await gather("/api/markets", {"prefix": prefix, "limit": limit}):
            found += doc["markets"]
    return web.json({"markets": sorted(set(found))[:limit]})


async def local_vectors() -> list[PartitionIndex]:
    """The in-memory vector indexes of the partitions this worker serves."""
    try:
        return await ingest.vectors.ready(owned_partitions())
    except Rebalanced as exc:
        raise Unavailable(str(exc)) from None


async def _target_vector(market: str) -> list[float]:
    """The stored (embedded) alpha vector of a market, from whichever worker holds it."""
    queries.check_market(market)
    try:
        return queries.target_vector(await local_vectors(), market)
    except NotFoundError:
        if not peers():
            raise
    for doc in await gather(f"/api/vector/{quote(market, safe='')}", {}):
        if doc.get("vector") is not None:
            return list(doc["vector"])
    raise NotFoundError(f"unknown market {market!r}")


@app.page("/api/vector/{market}")
@json_errors
async def market_vector(web: Any, request: Any, market: str) -> Any:
    """The market's stored alpha vector if this worker holds it (``null`` otherwise)."""
    try:
        return web.json({"vector": queries.target_vector(await local_vectors(), market)})
    except NotFoundError:
        return web.json({"vector": None})


async def _similar(request: Any, vector: list[float], exclude: str | None) -> list[Any]:
    k, min_score = _int(request, "k", 10), _float(request, "min", -1.0)
    hits = queries.similar(await local_vectors(), vector=vector, k=k, min_score=min_score,
                           exclude=exclude)
    if not _local(request):
        params: dict[str, Any] = {"vector": ",".join(map(repr, vector)), "k": k,
                                  "min": min_score}
        if exclude:
            params["exclude"] = exclude
        for doc in await gather("/api/similar", params):
            hits += doc["similar"]
    hits.sort(key=lambda h: (-h["score"], h["market"]))
    return hits[:k]


@app.page("/api/similar/{market}")
@json_errors
async def similar_market(web: Any, request: Any, market: str) -> Any:
    """Top-k markets most similar to ``market`` (cosine over alpha vectors), cluster-wide."""
    vector = await _target_vector(market)
    return web.json({"market": market, "similar": await _similar(request, vector, market)})


@app.page("/api/similar")
@json_errors
async def similar_vector(web: Any, request: Any) -> Any:
    """Top-k markets most similar to a given vector (comma-separated components)."""
    raw = request.query.get("vector", "")
    if not raw:
        raise QueryError("parameter 'vector' is required")
    try:
        vector = [float(x) for x in raw.split(",")]
    except ValueError:
        raise QueryError("vector must be comma-separated numbers") from None
    exclude = request.query.get("exclude")
    return web.json({"similar": await _similar(request, vector, exclude)})


def screen_spec(request: Any) -> Screen:
    """The screen a request asks for: ``where=component:op:value`` (repeated) and/or the
    single ``component``/``op``/``value``, with ``sort``, ``order`` and ``limit``."""
    conditions = [queries.parse_where(w) for w in request.query.getall("where", [])]
    if request.query.get("component") is not None:
        conditions.append(queries.condition(
            request.query["component"], request.query.get("op", "gt"), _float(request, "value")))
    return queries.make_screen(conditions, request.query.get("sort") or None,
                               request.query.get("order") or None, _int(request, "limit", 100))


@app.page("/api/screen")
@json_errors
async def screen(web: Any, request: Any) -> Any:
    """Markets whose current alpha components pass every condition, cluster-wide."""
    spec = screen_spec(request)
    hits = queries.screen(await local_vectors(), spec)
    if not _local(request):
        params = [("where", f"{c.component}:{c.op}:{c.value!r}") for c in spec.conditions]
        params += [("sort", spec.sort), ("order", "desc" if spec.descending else "asc"),
                   ("limit", str(spec.limit))]
        for doc in await gather("/api/screen", params):
            hits += doc["markets"]
    hits.sort(key=lambda h: spec.key(h["market"], h[spec.sort]))
    return web.json({
        "component": spec.conditions[0].component if spec.conditions else spec.sort,
        "conditions": [{"component": c.component, "op": c.op, "value": c.value}
                       for c in spec.conditions],
        "sort": spec.sort, "order": "desc" if spec.descending else "asc",
        "markets": hits[:spec.limit],
    })


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
    # messages still to process per partition (end offset - next offset to process)
    lag: dict[str, int | None] = {str(p): counters.behind.get(p) for p in actives}
    workers = {
        str(url): sorted(
            p for t, parts in topics.items() if t == changelog for p in parts)
        for url, topics in app.router.tables_metadata().items()
    }
    return web.json({
        "worker": str(app.conf.canonical_url), "leader": app.is_leader(),
        "recovering": recovering(),
        "active": actives, "standby": standbys, "lag": lag, "workers": workers,
        "standby_behind": await standby_behind(),
        "rebalances": ingest.rebalances.as_dict(),
    })


async def standby_behind() -> dict[str, int]:
    """Changelog records each standby replica has still to apply ("table:partition": n):
    what a failover to this worker would replay before it starts (0: caught up)."""
    tables = {t.changelog_topic.get_topic_name(): t for t in (facts, sketches)}
    tps = [tp for tp in app.assignor.assigned_standbys() if tp.topic in tables]
    if not tps:
        return {}
    try:
        ends = await app.consumer.highwaters(*tps)
    except Exception:  # broker unreachable for a moment: say nothing rather than guess
        return {}
    out = {}
    for tp in sorted(tps):
        table = tables[tp.topic]
        applied = table.data.persisted_offset(tp)
        end = ends.get(tp)
        if end is not None:
            out[f"{table.name}:{tp.partition}"] = max(
                0, end - (applied + 1 if applied is not None else 0))
    return out


@app.page("/api/signals")
@json_errors
async def signals(web: Any, request: Any) -> Any:
    """Signals fired (newest first), cluster-wide: ``market``, ``rule``, ``since`` (event
    time, ms), ``limit``; ``before`` (a page's ``next``) pages back."""
    market = request.query.get("market") or None
    rule = request.query.get("rule") or None
    since, limit = _int(request, "since", 0), _int(request, "limit", 100)
    raw_before = request.query.get("before") or None
    before = queries.parse_cursor(raw_before) if raw_before is not None else None
    found = queries.signals(all_dbs(), market, rule, since, before, limit)
    questions: dict[str, Any] = {}
    for doc in found:
        m = doc["market"]
        if m not in questions:
            questions[m] = _question(m)
        doc["question"] = questions[m]
    if not _local(request):
        params = {k: v for k, v in (("market", market), ("rule", rule), ("since", since),
                                    ("limit", limit), ("before", raw_before)) if v is not None}
        for doc in await gather("/api/signals", params):
            found += doc["signals"]
        found.sort(key=queries.signal_order, reverse=True)
        found = found[:limit]
    last = found[-1] if len(found) == limit else None
    nxt = None if last is None else ":".join(map(str, queries.signal_order(last)))
    return web.json({"signals": found, "next": nxt})


def _question(market: str) -> str | None:
    """The market's question, if a live feed sent it (read where its signals are)."""
    partition = (murmur2(market.encode()) & 0x7FFFFFFF) % settings.partitions
    value = queries.metadata([store().db(partition)], market).get("market/question")
    return value if isinstance(value, str) else None


# -- metrics, OpenAPI, dashboard, live events --------------------------------------------------


def _local_estimates() -> dict[str, float]:
    merged = MergedSketches.of(list(local_sketches().values()))
    return {"unique_markets": merged.markets.estimate(),
            "unique_traders": merged.traders.estimate()}


metrics.setup(app, counters, _local_estimates)

STATIC = Path(__file__).resolve().parent / "static"
_ASSETS = {
    "uPlot.iife.min.js": "application/javascript",
    "uPlot.min.css": "text/css",
    "dashboard.js": "application/javascript",
    "dashboard.css": "text/css",
}


@app.page("/")
async def dashboard(web: Any, request: Any) -> Any:
    """The dashboard (one page; a market's view is at ``/#/market/ID``)."""
    return web.html((STATIC / "index.html").read_text())


@app.page("/static/{name}")
@json_errors
async def static_asset(web: Any, request: Any, name: str) -> Any:
    if name not in _ASSETS:
        raise NotFoundError(f"no asset {name[:60]!r}")
    return web.bytes((STATIC / name).read_bytes(), content_type=_ASSETS[name])


@app.page("/api/openapi.json")
async def openapi_document(web: Any, request: Any) -> Any:
    return web.json(openapi.document(settings))


async def _snapshot() -> dict[str, Any]:
    merged = await cluster_sketches()
    return {
        "t": time.time(), **counters.snapshot(),
        "unique_markets": merged.markets.estimate(),
        "unique_traders": merged.traders.estimate(),
        "hot": [{"market": m, "ticks": n} for m, n in merged.hot(10)],
        "lag": await _total_lag(),
    }


async def _total_lag() -> int:
    """Messages this worker still has to process, over its tick partitions."""
    return sum(counters.behind.values())


@app.page("/api/events")
async def events(web: Any, request: Any) -> Any:
    """Server-sent events: a snapshot (counters, uniques, hot markets, lag) every second."""
    resp = aiohttp.web.StreamResponse(headers={
        "Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    limit = _int(request, "count", 0)  # 0: until the client goes away
    sent = 0
    try:
        while limit == 0 or sent < limit:
            try:
                doc = await _snapshot()
            except (Unavailable, QueryError) as exc:
                doc = {"t": time.time(), "error": str(exc)}
            await resp.write(b"data: " + orjson.dumps(doc) + b"\n\n")
            sent += 1
            await asyncio.sleep(1.0)
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    return resp
