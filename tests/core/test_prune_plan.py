"""The pruner's plan from a RocksDB cursor equals the plan from every segment key, and
reads O(markets + pruned) keys, not every segment of the partition."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import rocksdict
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gswarm.core.facts import (
    SEGMENT,
    fact_key,
    market_key,
    plan_prune,
    plan_prune_seeking,
    segment_key,
)

#: ids where one is a prefix of another, and non-ASCII
MARKETS = ["m", "m-1", "m-10", "m-1x", "m-2", "é", "z" * 40]
SEGMENTS = st.lists(st.tuples(st.sampled_from(MARKETS), st.integers(1, 2_000),
                              st.integers(0, 3)), max_size=60)


class Counting:
    """A cursor that counts the keys it was positioned on."""

    def __init__(self, it: Any) -> None:
        self.it, self.reads = it, 0

    def seek(self, key: bytes) -> None:
        self.it.seek(key)

    def seek_for_prev(self, key: bytes) -> None:
        self.it.seek_for_prev(key)

    def valid(self) -> bool:
        return bool(self.it.valid())

    def key(self) -> Any:
        self.reads += 1
        return self.it.key()

    def next(self) -> None:
        self.it.next()


def store(path: Path, segments: list[tuple[str, int, int]]) -> rocksdict.Rdict:
    db = rocksdict.Rdict(str(path), options=rocksdict.Options(raw_mode=True))
    for market, ts, seq in segments:
        db[segment_key(market, ts, seq)] = b"s"
        db[fact_key(market, 1, ts, seq)] = b"f"  # other key families around the segments
        db[market_key(market)] = b"r"
    db[b"P"], db[b"p"], db[b"T"] = b"1", b"2", b"3"
    return db


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(segments=SEGMENTS, retention=st.integers(0, 2_500))
def test_the_seeking_plan_equals_the_plan_over_every_key(
        tmp_path_factory: Any, segments: list[tuple[str, int, int]], retention: int) -> None:
    db = store(tmp_path_factory.mktemp("prune"), segments)
    keys = sorted(k for k, _ in db.items() if isinstance(k, bytes) and k.startswith(SEGMENT))
    assert plan_prune_seeking(db.iter(), retention) == plan_prune(keys, retention)
    db.close()


def test_a_prune_reads_a_few_keys_per_market_not_every_segment(tmp_path: Path) -> None:
    markets, per_market = 50, 400
    segments = [(f"m-{m}", 1_000 + t, t) for m in range(markets) for t in range(per_market)]
    db = store(tmp_path / "db", segments)
    cursor = Counting(db.iter())
    doomed = plan_prune_seeking(cursor, retention_ms=389)  # the 10 oldest of each market
    assert len(doomed) == markets * 10
    assert cursor.reads <= 4 * markets + len(doomed) + 1  # not 20,000 segments
    db.close()
