"""Similar markets and screens from the workers' in-memory indexes equal full scans of the
same markets' records, after ingest, after rebalances and after a kill -9.

The reference is computed offline: the same ticks through the pure core
(:func:`tests.stream.truth.ground_truth`), their market records in a RocksDB database of
the test's own, and :func:`~gswarm.store.queries.similar_scan` /
:func:`~gswarm.store.queries.screen_scan` over it.
"""

from __future__ import annotations

import random
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import rocksdict

from gswarm.config import Settings
from gswarm.core import alpha
from gswarm.core.facts import market_key
from gswarm.feeds.synthetic import synthetic_ticks
from gswarm.ports import free_port
from gswarm.runner import WorkerProcess
from gswarm.store import queries
from tests.stream.compare import sketched
from tests.stream.conftest import produce_ticks, wait_consumed, wait_for
from tests.stream.truth import ground_truth

pytestmark = pytest.mark.timeout(600)

TICKS = list(synthetic_ticks(markets=300, count=3000, seed=23))
FIRST, SECOND = TICKS[:1800], TICKS[1800:]


class Reference:
    """Full scans over the records the core computes from ``ticks`` (a RocksDB of its own)."""

    def __init__(self, ticks: list[dict[str, Any]], path: Path) -> None:
        truth = ground_truth(ticks)
        self.db = rocksdict.Rdict(str(path), rocksdict.Options(raw_mode=True))
        for market, rec in truth.records.items():
            self.db[market_key(market)] = rec.encode()
        self.markets = sorted(truth.records)

    def close(self) -> None:
        self.db.close()


@pytest.fixture
def reference(tmp_path: Path) -> Iterator[Callable[[list[dict[str, Any]]], Reference]]:
    made: list[Reference] = []

    def make(ticks: list[dict[str, Any]]) -> Reference:
        made.append(Reference(ticks, tmp_path / f"reference-{len(made)}"))
        return made[-1]

    yield make
    for ref in made:
        ref.close()


def random_screen(rng: random.Random) -> tuple[list[tuple[str, str]], Any]:
    """Query parameters of a random screen (1-3 conditions), and the same screen checked."""
    where = [(rng.choice(alpha.COMPONENTS), rng.choice(["gt", "ge", "lt", "le"]),
              rng.choice([0.0, 0.5, 0.7, 1.0, round(rng.uniform(-2, 2), 3)]))
             for _ in range(rng.randint(1, 3))]
    params = [("where", f"{c}:{op}:{v}") for c, op, v in where]
    sort, order, limit = rng.choice([None, *alpha.COMPONENTS]), rng.choice(
        [None, "asc", "desc"]), rng.choice([1, 5, 40, 500])
    params += [("limit", str(limit))]
    params += [("sort", sort)] if sort else []
    params += [("order", order)] if order else []
    spec = queries.make_screen([queries.condition(*w) for w in where], sort, order, limit)
    return params, spec


def check_answers(workers: list[WorkerProcess], ref: Reference, seed: int,
                  queries_each: int = 12) -> None:
    """Random similar-market queries and screens, asked of each worker, equal the scans."""
    rng = random.Random(seed)
    for worker in workers:
        for _ in range(queries_each):
            market = rng.choice(ref.markets)
            k, floor = rng.choice([1, 3, 10, 50]), rng.choice([-1.0, 0.0, 0.95])
            got = worker.get(f"/api/similar/{market}?k={k}&min={floor}")["similar"]
            assert got == queries.similar_scan([ref.db], market=market, k=k,
                                               min_score=floor), (worker.name, market, k)
            params, spec = random_screen(rng)
            got = worker.get("/api/screen?" + urllib.parse.urlencode(params))["markets"]
            assert got == queries.screen_scan([ref.db], spec), (worker.name, params)
        legacy = worker.get("/api/screen?component=rsi14&op=gt&value=0.7&limit=50")
        spec = queries.make_screen([queries.condition("rsi14", "gt", 0.7)], limit=50)
        assert legacy["markets"] == queries.screen_scan([ref.db], spec)


def test_answers_equal_the_scan_after_ingest(
    app_settings: Settings, workers: Callable[..., WorkerProcess],
    reference: Callable[[list[dict[str, Any]]], Reference],
) -> None:
    w = workers(app_settings, "w1")
    produce_ticks(app_settings, TICKS)
    wait_consumed(w, len(TICKS))
    check_answers([w], reference(TICKS), seed=1, queries_each=30)


def test_answers_equal_the_scan_after_partitions_move_and_come_back(
    settings_factory: Callable[..., Settings], workers: Callable[..., WorkerProcess],
    reference: Callable[[list[dict[str, Any]]], Reference],
) -> None:
    """w1 alone, then w2 joins and takes partitions, then w2 leaves and they come back to
    w1 with what w2 wrote: an index w1 kept from before would answer with old vectors."""
    import asyncio

    from gswarm.kafka import topics

    s = settings_factory(web_port=free_port(), partitions=4, lean=False)
    asyncio.run(topics.apply(s))
    w1 = workers(s, "w1")
    produce_ticks(s, FIRST)
    wait_consumed(w1, len(FIRST))
    check_answers([w1], reference(FIRST), seed=2)

    w2 = workers(s.override(web_port=free_port()), "w2", ready=False)
    wait_for(lambda: all(w.get("/api/cluster")["active"] for w in (w1, w2)), 90,
             "partitions on both workers")
    produce_ticks(s, SECOND)
    wait_for(lambda: sketched(w1, w2) == len(TICKS), 90, "every tick sketched")
    both = reference(TICKS)
    check_answers([w1, w2], both, seed=3)

    w2.stop()
    wait_for(lambda: len(w1.get("/api/cluster")["active"]) == 4
             and w1.get("/api/health")["partitions"] == [0, 1, 2, 3], 90,
             "every partition back on w1")
    check_answers([w1], both, seed=4)


def test_answers_equal_the_scan_after_kill_9_and_recovery(
    app_settings: Settings, workers: Callable[..., WorkerProcess],
    reference: Callable[[list[dict[str, Any]]], Reference],
) -> None:
    w1 = workers(app_settings, "w1")
    produce_ticks(app_settings, FIRST)
    wait_consumed(w1, len(FIRST))
    w1.kill()

    again = workers(app_settings, "w1")  # same data dir: local state plus the changelog
    check_answers([again], reference(FIRST), seed=5)
    produce_ticks(app_settings, SECOND)
    wait_for(lambda: sketched(again) == len(TICKS), 90, "every tick sketched")
    check_answers([again], reference(TICKS), seed=6)
