"""The ingest pipeline end to end: real broker, real `faust worker` process, HTTP queries."""

from __future__ import annotations

import random
import urllib.parse
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from gswarm.config import Settings
from gswarm.feeds.synthetic import synthetic_ticks
from gswarm.runner import WorkerProcess
from tests.stream.conftest import produce_ticks, wait_consumed
from tests.stream.truth import ground_truth, unit_alpha

pytestmark = pytest.mark.timeout(300)


def q(market: str) -> str:
    return urllib.parse.quote(market, safe="")


def test_queries_equal_offline_ground_truth(
    app_settings: Settings, workers: Callable[..., WorkerProcess]
) -> None:
    ticks = list(synthetic_ticks(markets=40, count=3000, seed=7))
    worker = workers(app_settings)
    produce_ticks(app_settings, ticks)
    stats = wait_consumed(worker, len(ticks))
    assert stats["ticks"] == len(ticks) and stats["dead_letters_total"] == 0
    assert stats["offsets_skipped"] == 0  # the skip watch raises no false alarm

    truth = ground_truth(ticks)
    rng = random.Random(1)
    for market, rec in truth.records.items():
        latest = worker.get(f"/api/markets/{q(market)}")
        assert latest["prob"] == rec.latest["prob"] and latest["ts"] == rec.latest["ts"]
        assert latest["ticks"] == rec.n
        assert np.allclose([latest["alpha"][c] for c in rec.latest["alpha"]],
                           list(rec.latest["alpha"].values()), rtol=1e-12, atol=0)

        points = worker.get(f"/api/markets/{q(market)}/history?limit=10000")["points"]
        assert [(p["ts"], p["value"]) for p in points] == truth.series(market)

        alphas = worker.get(
            f"/api/markets/{q(market)}/history?attr=market/alpha&limit=10000")["points"]
        expect = [a for _, _, _, a in sorted(truth.history[market])]
        assert np.allclose([p["value"] for p in alphas], expect, atol=1e-7)

        series = truth.series(market)
        for _ in range(5):
            t = rng.randint(series[0][0] - 1000, series[-1][0] + 1000)
            got = worker.get(f"/api/markets/{q(market)}/asof?t={t}")["datom"]
            assert (got["value"] if got else None) == truth.asof(market, t)

        t0, t1 = sorted(rng.sample([s[0] for s in series], 2)) if len(series) > 1 else (0, 0)
        assert series
        window = worker.get(f"/api/markets/{q(market)}/history?from={t0}&to={t1}")["points"]
        assert [p["ts"] for p in window] == [s[0] for s in series if t0 <= s[0] <= t1]

    # similarity ranking: cosine over current alpha vectors
    target = "m-00000"
    vectors = {m: unit_alpha(r) for m, r in truth.records.items() if m != target}
    scores = {m: float(v @ unit_alpha(truth.records[target])) for m, v in vectors.items()}
    expected = sorted(scores, key=lambda m: (-scores[m], m))[:5]
    got = worker.get(f"/api/similar/{target}?k=5")["similar"]
    assert [h["market"] for h in got] == expected
    assert np.allclose([h["score"] for h in got], [scores[m] for m in expected])
    # halfway between the 3rd and 4th scores: robust to last-bit differences of the dot
    threshold = (scores[expected[2]] + scores[expected[3]]) / 2
    got = worker.get(f"/api/similar/{target}?k=5&min={threshold}")["similar"]
    assert [h["market"] for h in got] == expected[:3]

    # prefix search and a screen over alpha components
    found = worker.get("/api/markets?prefix=m-0001&limit=1000")["markets"]
    assert found == sorted(m for m in truth.records if m.startswith("m-0001"))
    hot = worker.get("/api/screen?component=rsi14&op=gt&value=0.7")["markets"]
    assert {h["market"] for h in hot} == {
        m for m, r in truth.records.items() if r.latest["alpha"]["rsi14"] > 0.7}


def test_duplicates_collapse_and_out_of_order_lands_in_time_order(
    app_settings: Settings, workers: Callable[..., WorkerProcess]
) -> None:
    base = {"v": 1, "market": "dup-1", "volume": 1.0, "trader": "u-1", "source": "test"}
    ticks: list[dict[str, Any]] = [
        {**base, "id": "b3", "ts": 3000, "prob": 0.3},
        {**base, "id": "b1", "ts": 1000, "prob": 0.1},  # late
        {**base, "id": "b3", "ts": 3000, "prob": 0.3},  # duplicate bet (feed restart)
        {**base, "id": "b2", "ts": 2000, "prob": 0.2},  # late
        {**base, "id": "b1", "ts": 1000, "prob": 0.1},  # duplicate
    ]
    worker = workers(app_settings)
    produce_ticks(app_settings, ticks)
    stats = wait_consumed(worker, len(ticks))
    assert (stats["ticks"], stats["duplicates"]) == (3, 2)
    points = worker.get("/api/markets/dup-1/history")["points"]
    assert [(p["ts"], p["value"]) for p in points] == [(1000, 0.1), (2000, 0.2), (3000, 0.3)]
    latest = worker.get("/api/markets/dup-1")
    assert (latest["ts"], latest["prob"], latest["ticks"]) == (3000, 0.3, 3)
    assert worker.get("/api/markets/dup-1/asof?t=2500")["datom"]["value"] == 0.2
    assert worker.get("/api/markets/dup-1/asof?t=999")["datom"] is None
    since = worker.get("/api/markets/dup-1/since?ts=1000")["datoms"]
    assert sorted({d["tx"][0] for d in since}) == [2000, 3000]
