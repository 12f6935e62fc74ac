"""The in-memory index answers exactly what a brute-force pass over every market answers."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from gswarm.core import alpha, vectors
from gswarm.core.vectors import Condition, PartitionIndex, Screen

COMPONENT = st.sampled_from(alpha.COMPONENTS)
OP = st.sampled_from(sorted(vectors.OPS))
# few distinct values, so ties (equal scores, equal components) are common
VALUE = st.sampled_from([-2.0, -0.5, 0.0, 0.25, 0.5, 0.7, 1.0, 3.0, 1e-9, 1e6])


@st.composite
def markets(draw: st.DrawFn) -> dict[str, np.ndarray]:
    """Market id -> raw alpha vector; some markets share a vector (exact ties)."""
    n = draw(st.integers(1, 60))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    pool = rng.normal(size=(max(1, n // 3), alpha.DIM)) * rng.choice(
        [1e-3, 1.0, 50.0], size=(1, alpha.DIM))
    pool[:, alpha.INDEX["rsi14"]] = rng.choice([0.0, 0.5, 1.0, 0.7], size=len(pool))
    out = {}
    for i in range(n):
        row = pool[rng.integers(len(pool))] if rng.random() < 0.4 else rng.normal(
            size=alpha.DIM)
        out[f"m-{rng.integers(10_000):05d}-{i}"] = row
    return out


def split(ms: dict[str, np.ndarray], parts: int, ranked: float = 0.0) -> list[PartitionIndex]:
    """``ms`` over ``parts`` indexes; the first ``ranked`` fraction of each index's rows
    ordered by id (:meth:`PartitionIndex.rank`), the rows added after it not."""
    out = [PartitionIndex() for _ in range(parts)]
    items = list(ms.items())
    cut = int(len(items) * ranked)
    for i, (m, raw) in enumerate(items[:cut]):
        out[i % parts].upsert([m], raw[None, :])
    for p in out:
        p.rank()
        p.rerank_min = 10**9
    for i, (m, raw) in enumerate(items[cut:]):
        out[i % parts].upsert([m], raw[None, :])
    return out


def brute_similar(ms: dict[str, np.ndarray], target: np.ndarray, k: int, floor: float,
                  exclude: str | None) -> list[tuple[str, float]]:
    ids = [m for m in ms if m != exclude]
    if not ids:
        return []
    scores = vectors.exact_scores(alpha.embed(np.vstack([ms[m] for m in ids])), target)
    hits = sorted((-s, m) for m, s in zip(ids, scores.tolist(), strict=True) if s >= floor)
    return [(m, -s) for s, m in hits[:k]]


def brute_screen(ms: dict[str, np.ndarray], spec: Screen) -> list[str]:
    hits = [m for m, raw in ms.items() if all(c.holds(raw.tolist()) for c in spec.conditions)]
    return sorted(hits, key=lambda m: spec.key(m, float(ms[m][alpha.INDEX[spec.sort]])))[
        :spec.limit]


@settings(max_examples=150, deadline=None)
@given(markets(), st.integers(1, 3), st.integers(1, 12), st.sampled_from([-1.0, 0.0, 0.5]),
       st.booleans(), st.data())
def test_similar_equals_brute_force(ms: dict[str, np.ndarray], parts: int, k: int,
                                    floor: float, by_market: bool, data: st.DataObject) -> None:
    index = split(ms, parts)
    if by_market:
        market = data.draw(st.sampled_from(sorted(ms)))
        target = alpha.embed(ms[market][None, :])[0]
        exclude: str | None = market
    else:
        target = alpha.unit(data.draw(st.sampled_from(list(ms.values())))[None, :] + 1e-3)[0]
        exclude = None
    got = vectors.similar(index, target, k, floor, [exclude] if exclude else [])
    assert got == brute_similar(ms, target, k, floor, exclude)


@settings(max_examples=150, deadline=None)
@given(markets(), st.integers(1, 3),
       st.lists(st.tuples(COMPONENT, OP, VALUE), min_size=0, max_size=3),
       COMPONENT, st.booleans(), st.integers(1, 15), st.sampled_from([0.0, 0.5, 1.0]))
def test_screen_equals_brute_force(ms: dict[str, np.ndarray], parts: int,
                                   conds: list[tuple[str, str, float]], sort: str,
                                   descending: bool, limit: int, ranked: float) -> None:
    spec = Screen(tuple(Condition(*c) for c in conds), sort, descending, limit)
    got = [m for m, _ in vectors.screen(split(ms, parts, ranked), spec)]
    assert got == brute_screen(ms, spec)


def test_exact_scores_are_the_exact_dot_product_rounded_once() -> None:
    rng = np.random.default_rng(3)
    rows = alpha.unit(rng.normal(size=(200, alpha.DIM)))
    target = alpha.unit(rng.normal(size=(1, alpha.DIM)))[0]
    got = vectors.exact_scores(rows, target)
    for row, score in zip(rows, got.tolist(), strict=True):
        exact = sum(Fraction(float(a)) * Fraction(float(b)) for a, b in zip(row, target,
                                                                           strict=True))
        assert score == float(exact) == math.fsum(
            float(a) * float(b) for a, b in zip(row, target, strict=True))


def test_near_ties_below_float32_resolution_keep_exact_order() -> None:
    """Scores closer than float32 can tell apart still come out in exact order."""
    base = np.zeros(alpha.DIM)
    base[0] = 1.0
    ms = {}
    for i in range(50):
        row = base.copy()
        row[1] = 1e-4 * (i % 7) + 1e-12 * i  # many scores equal in float32, not in float64
        ms[f"m-{i:03d}"] = row
    target = alpha.embed(base[None, :])[0]
    for k in (1, 5, 20, 50):
        assert vectors.similar(split(ms, 2), target, k) == brute_similar(ms, target, k, -1, None)


def test_upsert_replaces_and_fill_keeps() -> None:
    index = PartitionIndex()
    one, two = np.ones((1, alpha.DIM)), np.full((1, alpha.DIM), 2.0)
    index.upsert(["a"], one)
    index.fill(["a", "b"], np.vstack([two, two]))
    assert index.columns.tolist() == [one[0].tolist(), two[0].tolist()]
    index.upsert(["a"], two)
    assert index.columns[0].tolist() == two[0].tolist()
    found = index.vector("a")
    assert found is not None and np.array_equal(found, alpha.embed(two)[0])
    assert index.vector("zzz") is None


def test_arrays_grow_in_steps_and_keep_their_rows() -> None:
    index = PartitionIndex()
    rng = np.random.default_rng(5)
    raw = rng.normal(size=(3000, alpha.DIM))
    for lo in range(0, 3000, 7):
        index.upsert([f"m{i}" for i in range(lo, min(lo + 7, 3000))], raw[lo:lo + 7])
    assert np.array_equal(index.columns, raw)
    assert np.array_equal(index.vectors, alpha.embed(raw))
    per_market = index.nbytes / len(index)
    assert 244 <= per_market <= 244 * 1.25 + 1


def test_ties_beyond_the_limit_are_broken_by_id_ranked_or_not() -> None:
    """Thousands of equal values: the first ids win, whether ranked or added since."""
    rng = np.random.default_rng(9)
    names = [f"m-{i:05d}" for i in rng.permutation(5000)]
    raw = np.zeros((5000, alpha.DIM))
    raw[:, alpha.INDEX["rsi14"]] = rng.choice([0.0, 1.0], size=5000)
    index = PartitionIndex()
    index.upsert(names[:3000], raw[:3000])
    spec = Screen((Condition("rsi14", "gt", 0.5),), "rsi14", True, 40)
    want = sorted(m for m, r in zip(names, raw, strict=True)
                  if r[alpha.INDEX["rsi14"]] > 0.5)[:40]
    assert [m for m, _ in vectors.screen([index], spec)] != want  # not all there yet
    index.upsert(names[3000:], raw[3000:])  # 2000 rows after the rank: ranked again
    assert [m for m, _ in vectors.screen([index], spec)] == want
    index.rerank_min = 10**9
    extra = [f"m-0000{i}x" for i in range(5)]  # unranked rows that sort first
    index.upsert(extra, np.tile(raw[names.index(want[0])], (5, 1)))
    assert [m for m, _ in vectors.screen([index], spec)] == sorted(extra + want)[:40]
