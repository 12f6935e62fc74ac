"""Query latency at scale: one lean worker holding N markets, asked while it ingests.

Per size, a fresh worker and topic: the fill is every market's two ticks (one message, an
array of two, per market, as fast as the producer goes; timed from the first send to the
worker having ingested every tick). Then the synthetic feed (a process of its own) sends
single ticks to the same markets (Zipf-skewed) at ``INGEST_RATE`` while each query is
asked ``requests`` times, one after the other, over one keep-alive connection: latest
state, a history page, as-of, similar markets (k=10), a one-condition and a
two-condition screen, prefix search, hot markets. Latencies are wall-clock per HTTP
request (the worker's answer, JSON included).

Before that, the index alone (in this process: no HTTP, no ingest) at 10k, 100k and 1M
markets: similar and screens timed on random markets.

Also per size: the in-memory vector index (bytes per market, from ``/api/stats``), the
worker's RSS, and, after a restart of the worker on the same data, how long its first
similar-markets answer takes (tables recovered, then every partition's index rebuilt
from the stored market records).
"""

from __future__ import annotations

import asyncio
import http.client
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import numpy as np

from bench.common import Bench, rss_mb, stats, wait_for
from gswarm.config import Settings
from gswarm.core import alpha, vectors
from gswarm.feeds.producer import produce
from gswarm.runner import WorkerProcess
from gswarm.store import queries

INGEST_RATE = 1000.0  # ticks/s sent while the queries are timed
START_MS = 1_700_000_000_000


def market_id(i: int, markets: int) -> str:
    return f"m-{i:0{max(5, len(str(markets - 1)))}d}"


def fill_ticks(markets: int, seed: int = 3) -> Iterator[dict[str, Any]]:
    """Two ticks per market, market after market (so each market is one array message)."""
    rng = np.random.default_rng(seed)
    chunk = 50_000
    for lo in range(0, markets, chunk):
        n = min(chunk, markets - lo)
        probs = np.round(rng.uniform(0.02, 0.98, size=(n, 2)), 6).tolist()
        vols = np.round(rng.lognormal(2, 1, size=(n, 2)) + 1, 2).tolist()
        gaps = rng.integers(1, 60_000, size=n).tolist()
        for j in range(n):
            i = lo + j
            m = market_id(i, markets)
            ts = START_MS + i * 7
            for t in range(2):
                yield {"v": 1, "market": m, "prob": probs[j][t], "ts": ts + t * gaps[j],
                       "volume": vols[j][t], "trader": f"u-{(i * 31 + t) % 5000}",
                       "source": "bench", "id": f"q-{i}-{t}"}


def live_feed(s: Settings, markets: int, count: float) -> subprocess.Popen[bytes]:
    """``gswarm feed synthetic`` at INGEST_RATE over the same market ids, in a process of
    its own (in this one it would take the timing client's interpreter lock)."""
    exe = Path(sys.executable).parent / "gswarm"
    return subprocess.Popen(
        [str(exe), "--broker", s.broker, "--app-id", s.app_id, "--partitions",
         str(s.partitions), "feed", "synthetic", "--markets", str(markets), "--rate",
         str(INGEST_RATE), "--count", str(int(count)), "--seed", "4"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


class Client:
    """GETs over one keep-alive HTTP connection, timed."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port,
                                               timeout=120)

    def get(self, path: str) -> tuple[float, int]:
        t = time.perf_counter()
        self.conn.request("GET", path)
        resp = self.conn.getresponse()
        resp.read()
        return (time.perf_counter() - t) * 1000, resp.status

    def close(self) -> None:
        self.conn.close()


def _paths(markets: int, rng: random.Random) -> dict[str, Any]:
    """Each query's path maker (a random market each time)."""
    def m() -> str:
        return market_id(rng.randrange(markets), markets)

    t_mid = START_MS + markets * 7 // 2
    return {
        "latest": lambda: f"/api/markets/{m()}",
        "history": lambda: f"/api/markets/{m()}/history?limit=100",
        "asof": lambda: f"/api/markets/{m()}/asof?t={t_mid}",
        "similar": lambda: f"/api/similar/{m()}?k=10",
        "screen": lambda: "/api/screen?component=rsi14&op=gt&value=0.7",
        "screen2": lambda: "/api/screen?" + urlencode(
            [("where", "rsi14:gt:0.7"), ("where", "log_odds:lt:0"), ("sort", "tick_rate"),
             ("limit", "100")]),
        "prefix": lambda: f"/api/markets?prefix={m()[:-2]}&limit=100",
        "hot": lambda: "/api/hot?k=10",
    }


def _summary(ms: list[float]) -> dict[str, float]:
    xs = sorted(ms)
    return {"p50": round(statistics.median(xs), 2),
            "p99": round(xs[min(len(xs) - 1, int(0.99 * len(xs)))], 2),
            "max": round(xs[-1], 2), "n": len(xs)}


def time_queries(worker: WorkerProcess, markets: int, requests: int) -> dict[str, Any]:
    rng = random.Random(markets)
    client = Client(worker.url)
    out: dict[str, Any] = {}
    try:
        for name, make in _paths(markets, rng).items():
            client.get(make())  # warm-up (and a check that it answers)
            times = []
            for _ in range(requests):
                ms, status = client.get(make())
                if status != 200:
                    raise RuntimeError(f"{name}: the worker answered {status}")
                times.append(ms)
            out[name] = _summary(times)
    finally:
        client.close()
    return out


def fill(s: Settings, worker: WorkerProcess, markets: int) -> dict[str, Any]:
    t = time.monotonic()
    asyncio.run(produce(s.broker, s.tick_topic, fill_ticks(markets), array_size=2,
                        progress=False))
    produced = time.monotonic() - t
    wait_for(lambda: (d := stats(worker))["ticks"] >= 2 * markets and d["behind_total"] == 0,
             3600, "the fill ingested", every=1.0)
    return {"ticks": 2 * markets, "messages": markets, "produce_s": round(produced, 1),
            "seconds": round(time.monotonic() - t, 1),
            "ticks_per_s": round(2 * markets / (time.monotonic() - t))}


def at_size(bench: Bench, markets: int, requests: int) -> dict[str, Any]:
    s = bench.settings(f"queries-{markets}")
    bench.create(s)
    worker = WorkerProcess(s, "worker")
    worker.start()
    try:
        worker.wait_ready()
        filled = fill(s, worker, markets)
        wait_for(lambda: stats(worker)["vectors"]["markets"] >= markets, 600, "the index")
        before = stats(worker)["ticks"]
        feed = live_feed(s, markets, INGEST_RATE * (requests + 60))
        try:
            time.sleep(3.0)  # the feed's producer connected and sending
            t = time.monotonic()
            latency = time_queries(worker, markets, requests)
            timed = time.monotonic() - t
            during = stats(worker)
        finally:
            feed.terminate()  # its own PID
            feed.wait(30)
        vec = during["vectors"]
        rss = rss_mb(worker.pid) if worker.pid is not None else 0.0
        worker.stop()
        worker.start()
        t = time.monotonic()
        wait_for(lambda: worker.get("/api/health", timeout=5)["partitions"]
                 == list(range(s.partitions)), 600, "recovery", every=0.1)
        recovered = time.monotonic() - t
        client = Client(worker.url)
        try:
            ms, _ = client.get(f"/api/similar/{market_id(1, markets)}?k=10")
        finally:
            client.close()
    finally:
        worker.stop()
    return {
        "markets": markets, "fill": filled, "latency_ms": latency,
        "ingested_while_timed": during["ticks"] - before, "timed_s": round(timed, 1),
        "vectors": {"markets": vec["markets"], "bytes": vec["bytes"],
                    "bytes_per_market": round(vec["bytes"] / max(vec["markets"], 1), 1)},
        "rss_mb": round(rss, 1),
        "restart": {"recovered_s": round(recovered, 2),
                    "first_similar_s": round(ms / 1000, 4)},
    }


def in_process(markets: int, runs: int = 50, partitions: int = 8) -> dict[str, Any]:
    """The index's own time (no HTTP, no ingest) on ``markets`` random markets whose rsi14
    is 0 or 1 (as with two ticks each: half the markets tie in a screen on it)."""
    rng = np.random.default_rng(markets)
    every = np.empty((markets, alpha.DIM))  # the "records": what a worker reads back

    def source(ms: Sequence[str]) -> vectors.F64:
        return every[[int(m[2:]) for m in ms]]

    parts = [vectors.PartitionIndex(source) for _ in range(partitions)]
    ids = [market_id(i, markets) for i in range(markets)]
    t = time.perf_counter()
    for lo in range(0, markets, 50_000):
        raw = every[lo:lo + 50_000]
        raw[:] = rng.normal(size=raw.shape)
        raw[:, alpha.INDEX["rsi14"]] = rng.choice([0.0, 1.0], size=len(raw))
        for p in range(partitions):
            rows = np.arange(p, len(raw), partitions)
            parts[p].upsert([ids[lo + r] for r in rows.tolist()], raw[rows])
    for part in parts:
        part.rank()
    built = time.perf_counter() - t
    one = queries.make_screen([queries.parse_where("rsi14:gt:0.7")])
    two = queries.make_screen([queries.parse_where("rsi14:gt:0.7"),
                               queries.parse_where("log_odds:lt:0")], "tick_rate")
    asks: dict[str, Callable[[], object]] = {
        "similar": lambda: queries.similar(
            parts, vector=queries.target_vector(parts, ids[rng.integers(markets)]), k=10),
        "screen": lambda: queries.screen(parts, one),
        "screen2": lambda: queries.screen(parts, two),
    }
    out: dict[str, Any] = {"markets": markets, "build_s": round(built, 2),
                           "bytes_per_market": round(sum(p.nbytes for p in parts) / markets, 1),
                           "python_bytes_per_market": round(python_bytes(parts) / markets, 1)}
    for name, ask in asks.items():
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            ask()
            times.append((time.perf_counter() - t) * 1000)
        out[name] = _summary(times)
    return out


def python_bytes(parts: Sequence[vectors.PartitionIndex]) -> int:
    """Bytes of the Python objects beside the arrays: the ids list, the id strings, the
    id -> row dict and its row ints (those above 256 are objects of their own)."""
    total = 0
    for p in parts:
        total += sys.getsizeof(p.ids) + sys.getsizeof(p.rows)
        total += sum(map(sys.getsizeof, p.ids)) + sys.getsizeof(257) * max(0, len(p) - 257)
    return total


def run(bench: Bench, sizes: list[int], requests: int,
        compute_sizes: list[int]) -> dict[str, Any]:
    return {"requests": requests, "ingest_rate": INGEST_RATE,
            "in_process": [in_process(n) for n in compute_sizes],
            "sizes": [at_size(bench, n, requests) for n in sizes]}
