"""Count-Min Sketch and top-k: never undercount, ε-bound, conservative beats plain, merge."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gswarm.core.sketches.cms import CountMinSketch
from gswarm.core.sketches.hashing import hash_ids
from gswarm.core.sketches.topk import TopK, rank


def zipf_keys(n: int, universe: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    ranks = np.arange(1, universe + 1)
    p = 1 / ranks**1.1
    return [f"m-{i}" for i in rng.choice(universe, size=n, p=p / p.sum())]


def test_sized_from_epsilon_delta() -> None:
    cms = CountMinSketch.from_error(0.001, 0.01)
    assert (cms.width, cms.depth) == (math.ceil(math.e / 0.001), math.ceil(math.log(100)))
    assert cms.counts.shape == (5, 2719)  # every configured row exists


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 300), min_size=1, max_size=400),
       st.integers(2, 50), st.integers(1, 4), st.booleans())
def test_never_underestimates(keys: list[int], width: int, depth: int, conservative: bool) -> None:
    cms = CountMinSketch(width, depth)
    ids = [f"k{k}" for k in keys]
    for i in range(0, len(ids), 37):  # arbitrary batches
        cms.update(hash_ids(ids[i:i + 37]), conservative=conservative)
    truth = Counter(ids)
    est = cms.query(hash_ids(list(truth)))
    assert all(int(e) >= truth[k] for k, e in zip(truth, est, strict=True))


def test_overestimate_within_epsilon_n_for_1_minus_delta_of_queries() -> None:
    eps, delta = 0.005, 0.01
    keys = zipf_keys(100_000, 5_000, seed=1)
    cms = CountMinSketch.from_error(eps, delta)
    cms.update(hash_ids(keys))
    truth = Counter(keys)
    queried = list(truth)
    over = cms.query(hash_ids(queried)).astype(np.int64) - np.array([truth[k] for k in queried])
    assert (over <= eps * len(keys)).mean() >= 1 - delta


def test_conservative_no_worse_than_plain() -> None:
    keys = zipf_keys(50_000, 3_000, seed=2)
    h = hash_ids(keys)
    cons, plain = CountMinSketch(200, 4), CountMinSketch(200, 4)
    cons.update(h)
    plain.update(h, conservative=False)
    uniq = list(Counter(keys))
    ce, pe = cons.query(hash_ids(uniq)), plain.query(hash_ids(uniq))
    assert np.all(ce <= pe)
    assert ce.sum() < pe.sum()


def test_batching_does_not_change_conservative_counters() -> None:
    keys = zipf_keys(5_000, 500, seed=3)
    one, many = CountMinSketch(100, 4), CountMinSketch(100, 4)
    one.update(hash_ids(keys))
    for i in range(0, len(keys), 97):
        many.update(hash_ids(keys[i:i + 97]))
    assert one == many


def test_weights_merge_rules_and_serialisation() -> None:
    a, b = CountMinSketch(64, 3), CountMinSketch(64, 3)
    a.update(hash_ids(["x", "y"]), np.array([5, 2], dtype=np.uint64))
    b.update(hash_ids(["x"]), np.array([3], dtype=np.uint64))
    a.merge(b)
    assert int(a.query(hash_ids(["x"]))[0]) >= 8
    assert CountMinSketch.from_bytes(a.to_bytes()) == a
    with pytest.raises(ValueError, match="shapes differ"):
        a.merge(CountMinSketch(32, 3))
    with pytest.raises(ValueError, match="version"):
        CountMinSketch.from_bytes(b"\x09" + a.to_bytes()[1:])


def test_topk_recall_on_a_zipf_stream() -> None:
    keys = zipf_keys(200_000, 20_000, seed=4)
    cms, top = CountMinSketch.from_error(0.002, 0.01), TopK(64)
    for i in range(0, len(keys), 5000):
        chunk = keys[i:i + 5000]
        for pos, est in cms.update(hash_ids(chunk)):
            top.offer(chunk[pos], est)
    cand = sorted(top.candidates)
    found = rank(dict(zip(cand, cms.query(hash_ids(cand)).tolist(), strict=True)), 20)
    true_top = {k for k, _ in Counter(keys).most_common(20)}
    recall = len(true_top & {k for k, _ in found}) / 20
    assert recall >= 0.95
    assert found, "hot markets must not come back empty"
