"""Lag that tells the truth: messages still to process, not the fetcher's position."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable

import pytest

from gswarm.config import Settings
from gswarm.core.lag import behind
from gswarm.feeds.synthetic import synthetic_ticks
from gswarm.runner import WorkerProcess
from tests.stream.conftest import produce_ticks, wait_consumed

pytestmark = pytest.mark.timeout(300)


def test_behind_counts_from_the_next_offset_to_process() -> None:
    ends = {0: 100, 1: 50, 2: 10, 3: 7}
    got = behind(ends, last_seen={0: 89, 3: 9}, committed={1: 20, 2: None, 3: 2})
    assert got == {0: 10, 1: 30, 2: 10, 3: 0}


def test_behind_during_a_backlog_and_zero_once_caught_up(
    app_settings: Settings, workers: Callable[..., WorkerProcess]
) -> None:
    """With a backlog, the worker fetches far ahead of what it has processed; the lag it
    reports (dashboard, /api/stats, /api/cluster) must count what it has not processed."""
    n = 200_000  # a backlog of several seconds for a worker at ~20k ticks/s
    produce_ticks(app_settings, synthetic_ticks(markets=200, count=n, seed=5))
    worker = workers(app_settings)
    samples = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        stats = worker.get("/api/stats")
        if len(stats["behind"]) == app_settings.partitions and stats["messages"] < n * 0.9:
            # the figure may be up to a second old, so it can only be larger than this
            assert stats["behind_total"] >= n - stats["messages"], stats["behind"]
            samples += 1
        if stats["messages"] >= n:
            break
        time.sleep(0.05)
    assert samples >= 1, "no sample taken while the worker was behind"
    wait_consumed(worker, n)
    deadline = time.monotonic() + 10
    while worker.get("/api/stats")["behind_total"] and time.monotonic() < deadline:
        time.sleep(0.2)
    stats = worker.get("/api/stats")
    assert stats["behind_total"] == 0 and stats["arrival_lag_ms"]["count"] == n
    cluster = worker.get("/api/cluster")
    assert set(cluster["lag"].values()) == {0}
    with urllib.request.urlopen(worker.url + "/metrics", timeout=10) as resp:
        assert 'gswarm_behind_messages{partition="0"} 0.0' in resp.read().decode()
