"""Produce -> queryable latency at fixed rates.

A fresh lean worker per rate; once it serves every partition, a producer sends synthetic
ticks at a steady rate for a while, stamping each tick's event time with the wall clock
(ms) as it is sent. The worker records, for every new fact, the moment it is queryable
(written and acknowledged by the changelog) minus that event time (``event_lag_ms`` of
``/api/stats``): p50, p99 and max here. Both clocks are this machine's.

If the worker cannot keep up with a rate, the lag grows for as long as the run lasts;
``kept_up`` says whether it ingested what was sent, and ``behind`` how many ticks it
trailed by when sending stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from bench.common import Bench, stats, wait_for
from gswarm.config import Settings
from gswarm.feeds.synthetic import synthetic_ticks
from gswarm.kafka import security
from gswarm.runner import WorkerProcess

STEP_S = 0.005  # the producer sends what is due every 5 ms


async def produce_now(s: Settings, markets: int, rate: float, seconds: float,
                      seed: int = 11) -> int:
    """Send ``rate`` ticks/s for ``seconds``, each stamped with the time it is sent."""
    ticks = synthetic_ticks(markets, int(rate * seconds) + 1, seed=seed)
    producer = AIOKafkaProducer(**security.client_kwargs(s), linger_ms=1, acks="all",
                                enable_idempotence=True)
    await producer.start()
    sent = 0
    try:
        pending = []
        start = time.monotonic()
        while (elapsed := time.monotonic() - start) < seconds:
            due = int(elapsed * rate) - sent
            now_ms = int(time.time() * 1000)
            for _ in range(due):
                tick = next(ticks)
                tick["ts"] = now_ms
                pending.append(await producer.send(
                    s.tick_topic, key=tick["market"].encode(), value=orjson.dumps(tick)))
            sent += due
            await asyncio.sleep(STEP_S)
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return sent


def at_rate(bench: Bench, rate: float, seconds: float, markets: int) -> dict[str, Any]:
    """One rate on a fresh worker and topic: lag percentiles and whether it kept up."""
    s = bench.settings(f"latency-{int(rate)}")
    bench.create(s)
    worker = WorkerProcess(s, "worker")
    worker.start()
    try:
        worker.wait_ready()
        sent = asyncio.run(produce_now(s, markets, rate, seconds))
        # whatever arrives within a second of the last send counts; a worker that cannot
        # keep up is not waited for (its lag would only grow)
        with contextlib.suppress(TimeoutError):
            wait_for(lambda: stats(worker)["event_lag_ms"]["count"] >= sent, 1.0, every=0.1)
        doc = stats(worker)
    finally:
        worker.stop()
    lag = doc["event_lag_ms"]
    return {
        "rate": rate, "seconds": seconds, "markets": markets, "sent": sent,
        "ingested": doc["items"], "behind": sent - doc["items"],
        "kept_up": doc["items"] >= 0.99 * sent,
        "p50_ms": lag["p50"], "p99_ms": lag["p99"], "max_ms": lag["max"],
        "facts_measured": lag["count"], "batches": doc["batches"],
    }


def run(bench: Bench, rates: list[float], seconds: float, markets: int) -> dict[str, Any]:
    return {"markets": markets, "seconds": seconds,
            "rates": [at_rate(bench, r, seconds, markets) for r in rates]}
