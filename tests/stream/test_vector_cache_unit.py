"""The worker's vector indexes defer the ingest's upserts (gswarm.stream.vectors): a query
still finds every market the ingest wrote before it, with its newest vector. No broker:
the partition's records live in a RocksDB database of a temporary folder.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import rocksdict

from gswarm.core import alpha
from gswarm.core.vectors import PartitionIndex
from gswarm.stream import vectors
from gswarm.stream.vectors import VectorCache


def cache(tmp_path: Path) -> VectorCache:
    db = rocksdict.Rdict(str(tmp_path / "p0"), options=rocksdict.Options(raw_mode=True))
    facts: Any = SimpleNamespace(data=SimpleNamespace(db=lambda partition: db))
    return VectorCache(facts)


def rows(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (n, alpha.DIM))


def direct(markets: list[str], raw: np.ndarray) -> PartitionIndex:
    index = PartitionIndex(lambda ms: np.empty((0, alpha.DIM)))
    index.upsert(markets, raw)
    return index


async def test_a_query_sees_every_upsert_before_it_with_the_newest_vector(
        tmp_path: Path) -> None:
    c = cache(tmp_path)
    first, second = rows(3, 1), rows(2, 2)
    c.upsert(0, ["a", "b", "c"], list(first))
    c.upsert(0, ["b", "d"], list(second))  # a later batch: b's newer vector
    assert c.pending_rows == 4  # nothing encoded yet
    [index] = await c.ready([0])
    assert c.pending_rows == 0
    want = direct(["a", "b", "c", "d"],
                  np.vstack([first[0], second[0], first[2], second[1]]))
    assert sorted(index.ids) == ["a", "b", "c", "d"]
    for market in "abcd":
        got, expected = index.vector(market), want.vector(market)
        assert got is not None and expected is not None
        assert got.tobytes() == expected.tobytes()
    assert c.markets() == 4


async def test_pending_upserts_are_applied_once_enough_wait(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vectors, "PENDING_ROWS", 4)
    c = cache(tmp_path)
    c.upsert(0, ["a", "b", "c"], list(rows(3, 3)))
    assert c.pending_rows == 3 and len(c.parts[0]) == 0
    c.upsert(0, ["d"], list(rows(1, 4)))
    assert c.pending_rows == 0 and len(c.parts[0]) == 4
    await c.ready([0])


async def test_a_rebalance_drops_the_pending_upserts_with_the_indexes(tmp_path: Path) -> None:
    c = cache(tmp_path)
    c.upsert(0, ["a"], list(rows(1, 5)))
    c.forget()
    assert c.pending_rows == 0 and not c.pending and not c.parts
