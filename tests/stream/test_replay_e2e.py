"""Replay of a real Manifold export through the broker and a worker."""

from __future__ import annotations

import bisect
import csv
import random
from collections.abc import Callable

import pytest

from gswarm.config import Settings
from gswarm.feeds.replay import read_bets
from gswarm.runner import WorkerProcess
from tests.conftest import SHARED_DATA
from tests.stream.conftest import produce_ticks, wait_consumed

ALTMAN = SHARED_DATA / "manifold_bets_altman.csv"
pytestmark = pytest.mark.timeout(300)


def test_replay_of_manifold_export(
    app_settings: Settings, workers: Callable[..., WorkerProcess]
) -> None:
    result = read_bets(ALTMAN, "altman-ceo-2024")
    assert not result.errors and len(result.ticks) == 5032
    worker = workers(app_settings)
    produce_ticks(app_settings, result.ticks)
    wait_consumed(worker, len(result.ticks))

    with ALTMAN.open() as f:
        rows = [(int(r["timestamp"]), float(r["probability"])) for r in csv.DictReader(f)]
    newest_ts, newest_prob = rows[0]  # the export is newest first

    points = worker.get("/api/markets/altman-ceo-2024/history?limit=10000")["points"]
    assert len(points) == 5032
    assert [p["ts"] for p in points] == sorted(ts for ts, _ in rows)
    latest = worker.get("/api/markets/altman-ceo-2024")
    assert latest["ts"] == newest_ts
    assert points[-1]["value"] == latest["prob"] == newest_prob

    ordered = sorted(rows)
    times = [ts for ts, _ in ordered]
    rng = random.Random(5)
    for _ in range(20):
        t = rng.randint(times[0], times[-1])
        got = worker.get(f"/api/markets/altman-ceo-2024/asof?t={t}")["datom"]
        i = bisect.bisect_right(times, t)
        at = times[i - 1]
        # ties (several fills in one ms) may come back in either order: any of them is right
        assert got["ts"] == at
        assert got["value"] in {p for ts, p in ordered if ts == at}
