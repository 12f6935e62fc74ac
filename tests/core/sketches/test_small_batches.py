"""The plain-Python forms for small batches give exactly the numpy forms' sketches.

Live batches are mostly a few ticks per partition, where hashing, HyperLogLog, Count-Min
and the window ring run on Python integers; large batches run in numpy. Persisted sketch
bytes must not depend on which form ran (they are compared bit for bit after a crash), so
each test forces the numpy form (``SMALL = 0``) and compares.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gswarm.core.sketches import cms, hashing, hll, window
from gswarm.core.sketches.cms import CountMinSketch
from gswarm.core.sketches.hashing import hash_id, hash_ids
from gswarm.core.sketches.hll import HyperLogLog
from gswarm.core.sketches.state import CountedTick, PartitionSketches
from gswarm.core.sketches.topk import TopK

ids = st.text(min_size=0, max_size=40)


def _numpy_only(monkeypatch: pytest.MonkeyPatch) -> None:
    for module in (hashing, hll, cms, window):
        monkeypatch.setattr(module, "SMALL", 0)
    monkeypatch.setattr(hashing, "_CACHED_BATCH", 0)


@given(st.lists(ids, min_size=1, max_size=60))
@settings(max_examples=200, deadline=None)
def test_python_hash_equals_the_column_hash(batch: list[str]) -> None:
    columns = hashing._hash_columns(batch).tolist()
    assert [hash_id(s) for s in batch] == columns
    assert hash_ids(batch).tolist() == columns  # small form and cache
    assert hash_ids(batch).tolist() == columns  # all from the cache now


def test_cache_overflow_keeps_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hashing, "_CACHE_SIZE", 50)
    batch = [f"u-{i}" for i in range(300)]
    for start in range(0, 300, 7):
        chunk = batch[start:start + 40]
        assert hash_ids(chunk).tolist() == hashing._hash_columns(chunk).tolist()
    assert len(hashing._cache) <= 50


def _hashes(rng: random.Random, n: int) -> np.ndarray:
    return np.array([rng.getrandbits(64) if rng.random() < 0.9 else rng.getrandbits(8)
                     for _ in range(n)], dtype=np.uint64)


def _chunks(rng: random.Random, n: int) -> list[slice]:
    out, pos = [], 0
    while pos < n:
        step = rng.choice([1, 2, 3, 5, 17, 24, 25, 60])
        out.append(slice(pos, pos + step))
        pos += step
    return out


def _replay(seed: int) -> tuple[bytes, bytes, list[list[tuple[int, int]]]]:
    rng = random.Random(seed)
    keys = [f"m-{int(rng.paretovariate(1.2)) % 50}" for _ in range(600)]
    h = hash_ids(keys)
    weights = np.array([rng.randint(1, 4) for _ in keys], dtype=np.uint64)
    sketch, reg = CountMinSketch(97, 4), HyperLogLog(8)
    runs = []
    for part in _chunks(rng, len(keys)):
        runs.append(sketch.update(h[part], weights[part]))
        reg.update(_hashes(rng, part.stop - part.start))
    return sketch.to_bytes(), reg.to_bytes(), runs


@pytest.mark.parametrize("seed", range(5))
def test_count_min_and_hll_small_forms_equal_numpy(seed: int,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    python = _replay(seed)
    _numpy_only(monkeypatch)
    assert _replay(seed) == python


def _stream(seed: int) -> list[list[CountedTick]]:
    rng = random.Random(seed)
    ticks, ts = [], 1_700_000_000_000
    for offset in range(1, 2_001):
        ts += rng.choice([0, 5, 1_000, 60_000, 400_000, -900_000])
        market = f"m-{int(rng.paretovariate(1.1)) % 150}"
        for index in range(rng.choice([1, 1, 1, 3])):
            ticks.append(CountedTick(offset, index, market, f"t-{rng.randrange(400)}", ts))
    batches, pos = [], 0
    while pos < len(ticks):
        step = rng.choice([1, 2, 4, 9, 24, 25, 80, 300])
        batches.append(ticks[pos:pos + step])
        pos += step
    return batches


def _apply(batches: list[list[CountedTick]]) -> bytes:
    state = PartitionSketches()
    for batch in batches:
        state.apply(batch)
    return state.to_bytes()


@pytest.mark.parametrize("seed", range(3))
def test_partition_sketch_bytes_do_not_depend_on_the_form(
        seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    python = _apply(_stream(seed))
    _numpy_only(monkeypatch)
    assert _apply(_stream(seed)) == python


class LinearTopK:
    """The reference: the weakest candidate found by a scan at every offer."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.candidates: dict[str, int] = {}

    def offer(self, key: str, estimate: int) -> None:
        cand = self.candidates
        if key in cand or len(cand) < self.capacity:
            cand[key] = max(estimate, cand.get(key, 0))
            return
        weakest = min((v, k) for k, v in cand.items())
        if (estimate, key) > weakest:
            del cand[weakest[1]]
            cand[key] = estimate


@pytest.mark.parametrize("seed", range(40))
def test_topk_heap_keeps_the_candidates_of_a_linear_scan(seed: int) -> None:
    rng = random.Random(seed)
    capacity = rng.randint(1, 20)
    ref, top = LinearTopK(capacity), TopK(capacity)
    counts: dict[str, int] = {}
    for _ in range(rng.randint(1, 3_000)):
        key = f"k{int(rng.paretovariate(1.1)) % rng.randint(5, 200)}"
        est = rng.randint(0, 50) if rng.random() < 0.3 else counts.get(key, 0) + 1
        counts[key] = max(counts.get(key, 0), est)
        ref.offer(key, est)
        top.offer(key, est)
        assert list(top.candidates.items()) == list(ref.candidates.items())
    again = TopK.from_bytes(top.to_bytes())
    assert list(again.candidates.items()) == list(top.candidates.items())


@pytest.mark.parametrize("small", [True, False])
def test_window_bytes_do_not_depend_on_batches_spanning_more_than_the_ring(
        small: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Event time jumps by two hours (a replay, a feed back after an outage): a batch holding
    ticks from both sides of the jump counts as late what a tick-by-tick run counts."""
    if not small:
        _numpy_only(monkeypatch)
    rng = random.Random(5)
    hour = 3_600_000
    times = sorted(rng.randrange(0, 600_000) for _ in range(40)) + sorted(
        2 * hour + rng.randrange(0, 600_000) for _ in range(40))
    times[50:50] = [rng.randrange(0, 600_000) for _ in range(5)]  # late after the jump
    ticks = [CountedTick(i, 0, f"m{i % 3}", f"u{i % 7}", t) for i, t in enumerate(times)]
    one_by_one = PartitionSketches()
    for tick in ticks:
        one_by_one.apply([tick])
    for cut in (1, 30, 45, 60):
        batched = PartitionSketches()
        batched.apply(ticks[:cut])
        batched.apply(ticks[cut:])
        assert batched.to_bytes() == one_by_one.to_bytes(), cut
    assert one_by_one.window.late == 5
