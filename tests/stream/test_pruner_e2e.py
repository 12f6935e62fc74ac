"""The pruner: old datoms leave queries, the changelog (tombstones) and the disk."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from gswarm.config import Settings
from gswarm.feeds.synthetic import synthetic_ticks
from gswarm.kafka import topics
from gswarm.ports import free_port
from gswarm.runner import WorkerProcess
from tests.stream.conftest import produce_ticks, wait_consumed, wait_for

pytestmark = pytest.mark.timeout(400)
RETENTION_S = 60.0


def datoms(worker: WorkerProcess) -> int:
    parts = worker.get("/api/storage")["partitions"]
    return sum(p["datoms"] for p in parts.values())


def test_pruner_keeps_a_bounded_window_and_tombstones_reach_recovery(
    settings_factory: Callable[..., Settings], workers: Callable[..., WorkerProcess]
) -> None:
    settings = settings_factory(web_port=free_port(), partitions=2, retention_s=RETENTION_S,
                                prune_interval_s=1.0)
    asyncio.run(topics.apply(settings))
    worker = workers(settings)
    # 10 ticks/s of event time over 20 markets: each wave is 100 s of event time
    feed = synthetic_ticks(markets=20, count=10_000, seed=8, rate=10.0)
    sizes = []
    sent = 0
    for _wave in range(5):
        wave = [next(feed) for _ in range(1000)]
        sent += produce_ticks(settings, wave)
        wait_consumed(worker, sent)
        before = int(worker.get("/api/stats")["prunes"])

        def pruned(b: int = before) -> bool:  # two full rounds after the wave
            return int(worker.get("/api/stats")["prunes"]) >= b + 2 * settings.partitions

        wait_for(pruned, 30, "a prune")
        sizes.append(datoms(worker))
    # bounded: ~60 s of 10 ticks/s x 5 attributes, plus the newest segment of each market
    # (with fast ingest a whole wave can be one segment per market): at most two waves'
    # worth, whatever the batching, where keeping everything would reach five
    assert max(sizes) <= 2 * 1000 * 5, sizes

    newest = max(t["ts"] for t in wave)
    cutoff = newest - int(RETENTION_S * 1000)
    for market in ("m-00000", "m-00001", "m-00007"):
        points = worker.get(f"/api/markets/{market}/history?limit=10000")["points"]
        old = [p for p in points if p["ts"] < cutoff - 5000]
        # what is left of the past is at most the market's newest segment
        assert len(old) <= 50, (market, len(old))
        latest = worker.get(f"/api/markets/{market}")
        assert latest["ts"] == max(t["ts"] for t in wave if t["market"] == market)
        assert worker.get(f"/api/markets/{market}/asof?t={newest}")["datom"] is not None

    # a fresh worker recovering from the changelog does not resurrect pruned facts
    worker.stop()
    fresh = workers(settings, "fresh")
    for market in ("m-00000", "m-00001", "m-00007"):
        a = fresh.get(f"/api/markets/{market}/history?limit=10000")["points"]
        assert all(p["ts"] >= cutoff - 5000 for p in a[:-50]), market
    assert datoms(fresh) <= sizes[-1] * 1.2
