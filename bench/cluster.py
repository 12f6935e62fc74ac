"""Cluster benchmarks: failover (with and without standbys), cold recovery, memory/disk.

Real worker processes on the session's broker (:func:`bench.common.bench_session`), fed
by the synthetic feed. Run through the suite: ``make bench`` or ``gswarm bench``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.common import (
    Bench,
    background,
    changelog_topics,
    end_offsets,
    rss_mb,
    stats,
    wait_for,
)
from gswarm.config import Settings
from gswarm.feeds.producer import produce
from gswarm.feeds.synthetic import synthetic_ticks
from gswarm.kafka import security
from gswarm.ports import free_port
from gswarm.runner import WorkerProcess


def feed(s: Settings, markets: int, count: int, rate: float | None, seed: int = 1,
         tick_rate: float = 1000.0) -> None:
    asyncio.run(produce(s.broker, s.tick_topic,
                        synthetic_ticks(markets, count, seed, rate=tick_rate),
                        rate=rate, progress=False, security=security.options(s)))


def failover(bench: Bench, standbys: bool, run: int, prefill: int = 60_000) -> float:
    """Seconds from SIGKILL of the leader to the survivor's first fact on its partitions."""
    s = bench.settings(f"fo-{'standby' if standbys else 'lean'}-{run}", lean=not standbys)
    bench.create(s)
    w1 = WorkerProcess(s.override(web_port=free_port()), "w1")
    w2 = WorkerProcess(s.override(web_port=free_port()), "w2")
    try:
        for w in (w1, w2):
            w.start()
        wait_for(lambda: all(w.get("/api/cluster")["active"] for w in (w1, w2)), 90)
        feed(s, 2000, prefill, None)  # state to recover: a pre-filled topic
        wait_for(lambda: sum(stats(w)["ticks"] for w in (w1, w2)) >= prefill, 300,
                 every=0.5)
        time.sleep(2)  # standbys catch up
        steady = background(lambda: feed(s, 2000, 40_000, 4000.0, seed=2))
        time.sleep(2)
        victim, survivor = (w1, w2) if w1.get("/api/cluster")["leader"] else (w2, w1)
        lost = victim.get("/api/cluster")["active"]
        before = survivor.get("/api/stats")["ticks_by_partition"]
        victim.kill()
        t0 = time.monotonic()

        def resumed() -> bool:
            now = survivor.get("/api/stats")["ticks_by_partition"]
            return any(now.get(str(p), 0) > before.get(str(p), 0) for p in lost)

        wait_for(resumed, 120)
        took = time.monotonic() - t0
        steady.join(60)
        return took
    finally:
        for w in (w1, w2):
            w.stop()


def cold_recovery(bench: Bench, ticks: int) -> dict[str, float]:
    """A worker with an empty data dir restores ``ticks`` ingested ticks' changelogs."""
    s = bench.settings("cold")
    bench.create(s)
    w = WorkerProcess(s.override(web_port=free_port()), "first")
    w.start()
    try:
        w.wait_ready()
        feed(s, 5000, ticks, None)
        wait_for(lambda: w.get("/api/stats")["ticks"] >= ticks, 600, every=0.5)
    finally:
        w.stop()
    records = asyncio.run(end_offsets(s, changelog_topics(s)))
    fresh = WorkerProcess(s.override(web_port=free_port()), "fresh")
    t0 = time.monotonic()
    fresh.start()
    try:
        fresh.wait_ready(timeout=300)
        took = time.monotonic() - t0
    finally:
        fresh.stop()
    return {"changelog_records": records, "seconds_to_ready": round(took, 2),
            "records_per_s": round(records / took)}


def memory(bench: Bench, seconds: float, markets: int) -> dict[str, Any]:
    """RSS and disk of one lean worker fed 5k ticks/s with the pruner on (60 s window)."""
    s = bench.settings("mem", retention_s=60.0, prune_interval_s=2.0)
    bench.create(s)
    w = WorkerProcess(s.override(web_port=free_port()), "w")
    w.start()
    samples = []
    try:
        w.wait_ready()
        # event time runs at 2 000 ticks per second of event time, so the 60 s window holds
        # about 120 000 ticks however long the run is
        stop = time.monotonic() + seconds
        t = background(lambda: feed(s, markets, int(seconds * 5000), 5000.0, tick_rate=2000.0))
        while time.monotonic() < stop:
            time.sleep(5)
            rss = rss_mb(w.pid) if w.pid is not None else 0.0
            disk = sum(f.stat().st_size for f in w.datadir.rglob("*") if f.is_file()) / 2**20
            samples.append({"t": round(seconds - (stop - time.monotonic())),
                            "rss_mb": round(rss, 1), "disk_mb": round(disk, 1),
                            "ticks": w.get("/api/stats")["ticks"]})
        t.join(30)
    finally:
        w.stop()
    return {"markets": markets, "seconds": seconds, "samples": samples}
