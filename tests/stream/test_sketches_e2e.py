"""Sketches end to end: uniques, hot markets (overall and windowed), exact under kill -9."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import pytest

from gswarm.config import Settings
from gswarm.feeds.synthetic import synthetic_ticks
from gswarm.runner import WorkerProcess
from tests.stream.compare import same_state, sketch_digests
from tests.stream.conftest import produce_ticks, wait_consumed, wait_for

pytestmark = pytest.mark.timeout(400)


def test_uniques_and_hot_markets(
    app_settings: Settings, workers: Callable[..., WorkerProcess]
) -> None:
    # 20 000 ticks over ~67 minutes of event time (rate 5/s): the window ring matters
    ticks = list(synthetic_ticks(markets=300, count=20_000, seed=21, rate=5.0))
    worker = workers(app_settings)
    produce_ticks(app_settings, ticks)
    stats = wait_consumed(worker, len(ticks))

    markets = {t["market"] for t in ticks}
    traders = {t["trader"] for t in ticks}
    assert stats["sketched_ticks"] == len(ticks)
    assert abs(stats["unique_markets"] / len(markets) - 1) < 0.03
    assert abs(stats["unique_traders"] / len(traders) - 1) < 0.03

    truth = Counter(t["market"] for t in ticks)
    hot = worker.get("/api/hot?k=10")["markets"]
    assert [h["market"] for h in hot][:5] == [m for m, _ in truth.most_common(5)]
    for h in hot:
        assert h["ticks"] >= truth[h["market"]]  # Count-Min never undercounts
    assert len({h["market"] for h in hot} & {m for m, _ in truth.most_common(10)}) >= 9

    # last 10 minutes = the newest two 5-minute slices of event time
    newest = max(t["ts"] for t in ticks) // 300_000
    recent = [t for t in ticks if t["ts"] // 300_000 >= newest - 1]
    recent_truth = Counter(t["market"] for t in recent)
    win = worker.get("/api/hot?k=5&window=600")
    assert [h["market"] for h in win["markets"]][:3] == [
        m for m, _ in recent_truth.most_common(3)]
    assert abs(win["unique_traders"] / len({t["trader"] for t in recent}) - 1) < 0.05


def test_kill_9_mid_stream_sketches_bit_identical_to_an_uninterrupted_run(
    settings_factory: Callable[..., Settings], workers: Callable[..., WorkerProcess]
) -> None:
    import asyncio

    from gswarm.kafka import topics
    from gswarm.ports import free_port

    # enough that a worker ingesting >10k ticks/s is killed mid-stream, not after the end
    ticks = list(synthetic_ticks(markets=200, count=100_000, seed=5))
    # commits every 5 s: a kill leaves processed but uncommitted messages to redeliver
    # no prune requests (messages on the tick partitions) during either run: one landing
    # mid-stream in one run only would move its later offsets, which the sketches keep
    crash = settings_factory(web_port=free_port(), partitions=4, commit_interval_s=5.0,
                             prune_interval_s=3600.0)
    calm = settings_factory(web_port=free_port(), partitions=4, prune_interval_s=3600.0)
    for s in (crash, calm):
        asyncio.run(topics.apply(s))

    # the uninterrupted run
    w_calm = workers(calm, "calm")
    produce_ticks(calm, ticks)
    wait_consumed(w_calm, len(ticks))

    # the same stream, with the worker killed twice while it ingests
    produce_ticks(crash, ticks)
    for _ in range(2):
        victim = workers(crash, "crash0")
        def under_way(v: WorkerProcess = victim) -> bool:
            return int(v.get("/api/stats")["ticks"]) > 2000

        wait_for(under_way, 60, "ingest under way")
        victim.kill()
    survivor = workers(crash, "crash0")  # same data dir: local state + changelog + redelivery
    wait_for(lambda: sum(v[1] for v in sketch_digests(survivor).values()) >= len(ticks),
             120, "all ticks sketched")
    time.sleep(1)
    assert sketch_digests(survivor) == sketch_digests(w_calm)
    assert survivor.get("/api/stats")["duplicates"] > 0, "the kill caused no redelivery"

    # facts too: nothing lost, nothing counted twice
    same_state(survivor, w_calm, sorted({t["market"] for t in ticks})[:60])

    # and the changelogs hold all of it: a worker with no local state recovers the same
    survivor.stop()
    fresh = workers(crash, "fresh")
    wait_for(lambda: sketch_digests(fresh) == sketch_digests(w_calm), 60, "recovery")
    same_state(fresh, w_calm, sorted({t["market"] for t in ticks}))

