"""Cluster benchmarks: failover (with and without standbys), cold recovery, memory/disk.

Starts its own broker on free loopback ports (data in a temporary folder), real worker
processes, the synthetic feed. Writes bench/results/<date>-cluster.json and prints
Markdown for BENCHMARKS.md. Run: `make bench` or `python bench/cluster.py [--quick]`.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import socket
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gswarm.config import Settings
from gswarm.feeds.producer import produce
from gswarm.feeds.synthetic import synthetic_ticks
from gswarm.kafka import topics
from gswarm.kafka.broker import LocalBroker
from gswarm.runner import WorkerProcess

RESULTS = Path(__file__).resolve().parent / "results"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(pred: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if pred():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError


def feed(s: Settings, markets: int, count: int, rate: float | None, seed: int = 1,
         tick_rate: float = 1000.0) -> None:
    asyncio.run(produce(s.broker, s.tick_topic,
                        synthetic_ticks(markets, count, seed, rate=tick_rate),
                        rate=rate, progress=False))


def background(fn: Callable[[], None]) -> threading.Thread:
    t = threading.Thread(target=fn, daemon=True)
    t.start()
    return t


def failover(base: Settings, home: Path, standbys: bool, run: int) -> float:
    s = base.override(app_id=f"fo-{standbys}-{run}", data_dir=home / f"fo-{standbys}-{run}",
                      lean=not standbys, partitions=8)
    asyncio.run(topics.apply(s))
    w1 = WorkerProcess(s.override(web_port=free_port()), "w1")
    w2 = WorkerProcess(s.override(web_port=free_port()), "w2")
    try:
        for w in (w1, w2):
            w.start()
        wait_for(lambda: all(w.get("/api/cluster")["active"] for w in (w1, w2)), 90)
        feed(s, 2000, 60_000, None)  # state to recover: a pre-filled topic
        wait_for(lambda: sum(w.get("/api/stats")["ticks"] for w in (w1, w2)) >= 60_000, 120)
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


def cold_recovery(base: Settings, home: Path, ticks: int) -> dict[str, float]:
    s = base.override(app_id="cold", data_dir=home / "cold", partitions=8)
    asyncio.run(topics.apply(s))
    w = WorkerProcess(s.override(web_port=free_port()), "first")
    w.start()
    try:
        w.wait_ready()
        feed(s, 5000, ticks, None)
        wait_for(lambda: w.get("/api/stats")["ticks"] >= ticks, 300)
    finally:
        w.stop()
    records = asyncio.run(changelog_records(s))
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


async def changelog_records(s: Settings) -> int:
    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=s.broker, group_id=None)
    await consumer.start()
    try:
        total = 0
        for table in ("facts", "sketches"):
            topic = f"{s.app_id}-{table}-changelog"
            tps = [TopicPartition(topic, p) for p in range(s.partitions)]
            total += sum((await consumer.end_offsets(tps)).values())
        return total
    finally:
        await consumer.stop()


def memory(base: Settings, home: Path, seconds: float, markets: int) -> dict[str, Any]:
    s = base.override(app_id="mem", data_dir=home / "mem", partitions=8, retention_s=60.0,
                      prune_interval_s=2.0)
    asyncio.run(topics.apply(s))
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
            rss = _rss_mb(w.pid)
            disk = sum(f.stat().st_size for f in w.datadir.rglob("*") if f.is_file()) / 2**20
            samples.append({"t": round(seconds - (stop - time.monotonic())),
                            "rss_mb": round(rss, 1), "disk_mb": round(disk, 1),
                            "ticks": w.get("/api/stats")["ticks"]})
        t.join(30)
    finally:
        w.stop()
    return {"markets": markets, "seconds": seconds, "samples": samples}


def _rss_mb(pid: int | None) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    runs, mem_s, cold_ticks = (1, 20.0, 20_000) if args.quick else (3, 180.0, 100_000)
    with tempfile.TemporaryDirectory(prefix="gswarm-bench-") as tmp:
        home = Path(tmp)
        kport, cport = free_port(), free_port()
        base = Settings.from_env({}).override(
            kafka_dir=home / "kafka", kafka_port=kport, kafka_controller_port=cport,
            broker=f"127.0.0.1:{kport}")
        broker = LocalBroker(base)
        broker.start()
        try:
            warm = [failover(base, home, True, i) for i in range(runs)]
            cold = [failover(base, home, False, i) for i in range(runs)]
            recovery = cold_recovery(base, home, cold_ticks)
            mem = memory(base, home, mem_s, 100_000)
        finally:
            broker.stop()
    result = {
        "date": dt.date.today().isoformat(), "quick": args.quick,
        "failover_with_standbys_s": warm, "failover_without_standbys_s": cold,
        "cold_recovery": recovery, "memory": mem,
    }
    RESULTS.mkdir(exist_ok=True)
    name = f"{result['date']}-cluster{'-quick' if args.quick else ''}.json"
    (RESULTS / name).write_text(json.dumps(result, indent=2))

    def fmt(xs: list[float]) -> str:
        return f"{statistics.median(xs):.2f} ({min(xs):.2f}-{max(xs):.2f})"

    print("| what | figure |\n| --- | --- |")
    print(f"| kill -9 -> survivor writes the dead worker's partitions, 1 standby | "
          f"{fmt(warm)} s |")
    print(f"| the same, no standbys (lean settings) | {fmt(cold)} s |")
    print(f"| cold recovery: {recovery['changelog_records']:,} changelog records | "
          f"{recovery['seconds_to_ready']} s, {recovery['records_per_s']:,} records/s |")
    s0, s1 = mem["samples"][0], mem["samples"][-1]
    peak = max(x["rss_mb"] for x in mem["samples"])
    print(f"| RSS, {mem['markets']:,} markets, 60 s window, {mem['seconds']:.0f} s at 5k/s | "
          f"{s0['rss_mb']} MB at {s0['t']} s -> {s1['rss_mb']} MB at {s1['t']} s "
          f"(peak {peak}) |")
    print(f"| disk, same run | {s0['disk_mb']} MB -> {s1['disk_mb']} MB |")


if __name__ == "__main__":
    main()
