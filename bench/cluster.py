"""Cluster benchmarks: failover (with and without standbys), cold recovery, memory/disk.

Real worker processes on the session's broker (:func:`bench.common.bench_session`), fed
by the synthetic feed. Run through the suite: ``make bench`` or ``gswarm bench``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import time
from collections.abc import Callable, Iterable
from typing import Any, cast

from bench.common import (
    Bench,
    background,
    changelog_topics,
    end_offsets,
    rss_mb,
    stats,
    wait_for,
)
from gswarm import cluster as gcluster
from gswarm.config import Settings
from gswarm.feeds.producer import produce
from gswarm.feeds.synthetic import synthetic_ticks
from gswarm.kafka import security
from gswarm.ports import free_port
from gswarm.runner import WorkerProcess
from gswarm.web.client import get_json


def feed(s: Settings, markets: int, count: int, rate: float | None, seed: int = 1,
         tick_rate: float = 1000.0, until: float | None = None) -> None:
    """Produce ``count`` synthetic ticks at ``rate`` (stopping early at monotonic ``until``)."""
    ticks: Iterable[dict[str, Any]] = synthetic_ticks(markets, count, seed, rate=tick_rate)
    if until is not None:
        ticks = itertools.takewhile(lambda _: time.monotonic() < until, ticks)
    asyncio.run(produce(s.broker, s.tick_topic, ticks, rate=rate, progress=False,
                        security=security.options(s)))


#: the parts of a failover, from the survivor's rebalance timeline (/api/cluster)
PARTS = ("detect", "revoke", "rebalance", "recover", "resume")


def _timeline(views: list[dict[str, Any]], killed_at: float,
              lost: list[int]) -> dict[str, float] | None:
    """The failover's parts, once a worker (the survivor, or the dead one restarted) wrote
    to one of the ``lost`` partitions in a rebalance after the kill: from the
    ``/api/cluster`` rebalance timelines ``views`` of the workers that answer."""
    best: dict[str, float] | None = None
    for view in views:
        for r in view["rebalances"]["recent"]:
            steps = [r[k] for k in ("began_at", "revoked_at", "assigned_at", "recovered_at")]
            writes = [t for p, t in r["first_write_at"].items() if int(p) in lost]
            if None in steps or steps[0] < killed_at or not writes:
                continue
            moments = [killed_at, *steps, min(writes)]
            parts = {"total": moments[-1] - killed_at, **{
                part: b - a for part, a, b in zip(PARTS, moments[:-1], moments[1:], strict=True)}}
            if best is None or parts["total"] < best["total"]:
                best = parts
    return best


def failover(bench: Bench, standbys: bool, supervised: bool, run: int,
             prefill: int = 60_000) -> dict[str, float]:
    """Seconds from SIGKILL of the leader to the survivor's first fact on its partitions,
    and their parts: detection (kill -> the survivor learns a rebalance began), revoke (it
    finishes its batch and gives up its partitions), rebalance (-> the new assignment),
    recovery (-> tables up to date), resume (-> first fact on a partition it took over).

    ``supervised``: the workers run under the local supervisor (``gswarm cluster up``),
    which evicts a dead worker from the group at once and restarts it; otherwise they are
    plain workers and the group waits for the session to expire.
    """
    name = f"fo-{'standby' if standbys else 'lean'}-{'sup' if supervised else 'bare'}-{run}"
    s = bench.settings(name, lean=not standbys)
    bench.create(s)
    plain = [WorkerProcess(s.override(web_port=free_port()), f"w{i}") for i in (1, 2)]
    try:
        if supervised:
            state = gcluster.up(s, 2, standbys=standbys)
            workers = [(int(w["pid"]), w["url"]) for w in state["workers"]]
        else:
            for w in plain:
                w.start()
            workers = [(cast(int, w.pid), w.url) for w in plain]

        def get(url: str) -> Callable[[str], Any]:
            return lambda path: get_json(s, url + path, timeout=10)

        wait_for(lambda: all(get(u)("/api/cluster")["active"] for _, u in workers), 90)
        feed(s, 2000, prefill, None)  # state to recover: a pre-filled topic
        wait_for(lambda: sum(get(u)("/api/stats")["ticks"] for _, u in workers) >= prefill,
                 300, every=0.5)
        time.sleep(2)  # standbys catch up
        steady = background(lambda: feed(s, 2000, 40_000, 4000.0, seed=2))
        time.sleep(2)
        (victim, vurl), (_, surl) = (
            workers if get(workers[0][1])("/api/cluster")["leader"] else workers[::-1])
        lost = get(vurl)("/api/cluster")["active"]
        # what the survivor's standbys had still to apply (changelog records) at the kill
        behind = sum(get(surl)("/api/cluster")["standby_behind"].values())
        os.kill(victim, signal.SIGKILL)
        killed_at = time.time()
        found: list[dict[str, float]] = []

        views: list[dict[str, Any]] = []

        def resumed() -> bool:
            views.clear()
            for _, url in workers:  # the survivor, and the victim once restarted
                with contextlib.suppress(OSError, ValueError):
                    views.append(get(url)("/api/cluster"))
            parts = _timeline(views, killed_at, lost)
            if parts is not None:
                found.append(parts)
            return parts is not None

        try:
            wait_for(resumed, 120)
        except TimeoutError:
            raise TimeoutError(f"no worker wrote to partitions {lost} within 120 s of the kill "
                               f"at {killed_at:.3f}; their rebalances: {views}") from None
        out = {**{k: round(v, 3) for k, v in found[0].items()}, "standby_behind": behind}
        if supervised:  # the restarted worker: process start, join, recovery, own writes
            def restarted() -> bool:
                rebalances = get(vurl)("/api/cluster")["rebalances"]["recent"]
                return any(r["first_write_at"] for r in rebalances)

            wait_for(restarted, 120)
            out["restarted_writing"] = round(time.time() - killed_at, 3)
        steady.join(60)
        return out
    finally:
        if supervised:
            gcluster.down(s)
        for w in plain:
            w.stop()


def steady(bench: Bench, seconds: float, rate: float) -> dict[str, Any]:
    """Two workers with standbys fed ``rate`` ticks/s (more than they ingest: full load)
    for ``seconds``: rebalances nobody asked for (a missed heartbeat expiring a session)
    would show in each worker's rebalance count (/api/cluster)."""
    s = bench.settings("steady", lean=False)
    bench.create(s)
    ws = [WorkerProcess(s.override(web_port=free_port()), f"w{i}") for i in (1, 2)]
    try:
        for w in ws:
            w.start()
        wait_for(lambda: all(w.get("/api/cluster")["active"] for w in ws), 180)
        time.sleep(3)  # the joins' rebalances are over
        start = [w.get("/api/cluster")["rebalances"]["count"] for w in ws]
        t0 = time.monotonic()
        load = background(lambda: feed(s, 2000, int(seconds * rate), rate, seed=5,
                                       until=t0 + seconds))
        load.join(seconds + 60)
        took = time.monotonic() - t0
        end = [w.get("/api/cluster")["rebalances"]["count"] for w in ws]
        ticks = sum(stats(w)["ticks"] for w in ws)
        behind = sum(stats(w)["behind_total"] for w in ws)
        return {"seconds": round(took, 1), "rate": rate, "ticks": ticks, "behind": behind,
                "session_timeout_s": s.session_timeout_s, "heartbeat_s": s.heartbeat_s,
                "rebalances": [b - a for a, b in zip(start, end, strict=True)],
                "alive": [w.alive() for w in ws]}
    finally:
        for w in ws:
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
