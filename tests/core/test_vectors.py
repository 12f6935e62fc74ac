"""The in-memory index answers exactly what a brute-force pass over every market answers,
including on values its float32 approximation cannot tell from a threshold or from each
other (then it must read them back from its source)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from gswarm.core import alpha, vectors
from gswarm.core.vectors import Condition, PartitionIndex, Screen

DIM = alpha.DIM

COMPONENT = st.sampled_from(alpha.COMPONENTS)
OP = st.sampled_from(sorted(vectors.OPS))
# few distinct values, so ties (equal scores, equal components) are common
THRESHOLDS = [-2.0, -0.5, 0.0, 0.25, 0.5, 0.7, 1.0, 3.0, 1e-9, 1e6]
VALUE = st.sampled_from(THRESHOLDS)


#: values that stress the approximation: on and a float64 step either side of the screen
#: thresholds, a float32 step off them, huge (unbounded components go through expm1),
#: tiny (below float32 range next to the others), zeros of both signs
EDGES = sorted({x for v in THRESHOLDS
                for x in (v, math.nextafter(v, math.inf), math.nextafter(v, -math.inf),
                          v * (1 + 2.0**-24), v * (1 - 2.0**-24))}
               | {1e300, -1e300, 1e15, 1e15 + 2, 1e-300, -0.0, 0.0})


class Store:
    """The exact raw vectors the indexes were given (what a worker's records hold), read
    back through their ``source``; counts the markets read."""

    def __init__(self, ms: dict[str, np.ndarray] | None = None) -> None:
        self.raw: dict[str, np.ndarray] = dict(ms or {})
        self.reads = 0

    def read(self, markets: Sequence[str]) -> vectors.F64:
        self.reads += len(markets)
        return np.array([self.raw[m] for m in markets], dtype=np.float64).reshape(-1, DIM)

    def index(self) -> PartitionIndex:
        return PartitionIndex(self.read)

    def put(self, index: PartitionIndex, markets: list[str], raw: np.ndarray) -> None:
        self.raw.update(zip(markets, raw, strict=True))
        index.upsert(markets, raw)


@st.composite
def markets(draw: st.DrawFn, edges: bool = False) -> dict[str, np.ndarray]:
    """Market id -> raw alpha vector; some markets share a vector (exact ties), some
    share single components; with ``edges``, components often take :data:`EDGES` values."""
    n = draw(st.integers(1, 60))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    pool = rng.normal(size=(max(1, n // 3), DIM)) * rng.choice(
        [1e-3, 1.0, 50.0], size=(1, DIM))
    pool[:, alpha.INDEX["rsi14"]] = rng.choice([0.0, 0.5, 1.0, 0.7], size=len(pool))
    out = {}
    for i in range(n):
        row = pool[rng.integers(len(pool))].copy() if rng.random() < 0.4 else rng.normal(
            size=DIM)
        if edges:
            hit = rng.random(DIM) < 0.3
            row[hit] = rng.choice(EDGES, size=int(hit.sum()))
            if rng.random() < 0.05:
                row[:] = 0.0
        out[f"m-{rng.integers(10_000):05d}-{i}"] = row
    return out


def split(ms: dict[str, np.ndarray], parts: int, ranked: float = 0.0,
          store: Store | None = None) -> list[PartitionIndex]:
    """``ms`` over ``parts`` indexes; the first ``ranked`` fraction of each index's rows
    ordered by id (:meth:`PartitionIndex.rank`), the rows added after it not."""
    store = store or Store(ms)
    out = [store.index() for _ in range(parts)]
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


def brute_screen(ms: dict[str, np.ndarray], spec: Screen) -> list[tuple[str, list[str]]]:
    """The screen by brute force: markets and their shown values (as hex: -0.0 is not 0.0)."""
    hits = [m for m, raw in ms.items() if all(c.holds(raw.tolist()) for c in spec.conditions)]
    hits.sort(key=lambda m: spec.key(m, float(ms[m][alpha.INDEX[spec.sort]])))
    return [(m, [float(ms[m][alpha.INDEX[c]]).hex() for c in spec.components])
            for m in hits[:spec.limit]]


def indexed_screen(parts: list[PartitionIndex], spec: Screen) -> list[tuple[str, list[str]]]:
    return [(m, [v.hex() for v in values]) for m, values in vectors.screen(parts, spec)]


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
    assert indexed_screen(split(ms, parts, ranked), spec) == brute_screen(ms, spec)


@settings(max_examples=300, deadline=None)
@given(markets(edges=True), st.integers(1, 3),
       st.lists(st.tuples(COMPONENT, OP, VALUE), min_size=0, max_size=3),
       COMPONENT, st.booleans(), st.integers(1, 15))
def test_screen_on_edge_values_equals_brute_force(
        ms: dict[str, np.ndarray], parts: int, conds: list[tuple[str, str, float]],
        sort: str, descending: bool, limit: int) -> None:
    """Values a float32 step or less from a threshold or from each other, huge and tiny
    values, signed zeros, all-zero rows: still the exact answer, values included."""
    spec = Screen(tuple(Condition(*c) for c in conds), sort, descending, limit)
    assert indexed_screen(split(ms, parts), spec) == brute_screen(ms, spec)


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
    store = Store()
    index = store.index()
    one, two = np.ones((1, DIM)), np.full((1, DIM), 2.0)
    store.put(index, ["a"], one)
    index.fill(["a", "b"], np.vstack([two, two]))
    store.raw["b"] = two[0]
    assert approximately(index) == [one[0].tolist(), two[0].tolist()]
    index.upsert(["a"], two)
    assert approximately(index)[0] == two[0].tolist()
    found = index.vector("a")
    assert found is not None and np.array_equal(found, alpha.embed(two)[0])
    assert index.vector("zzz") is None


def approximately(index: PartitionIndex) -> list[list[float]]:
    """Each row's components as the index has them (recovered where it can: here all)."""
    rows = np.arange(len(index))
    cols = []
    for j in range(DIM):
        value, _ = index.approx(j)
        assert index.recoverable(rows, j).all()
        cols.append(vectors.recover(value, j))
    out: list[list[float]] = np.column_stack(cols).tolist()
    return out


def test_arrays_grow_in_steps_and_keep_their_rows() -> None:
    index = Store().index()
    rng = np.random.default_rng(5)
    raw = rng.normal(size=(3000, DIM))
    for lo in range(0, 3000, 7):
        index.upsert([f"m{i}" for i in range(lo, min(lo + 7, 3000))], raw[lo:lo + 7])
    assert np.array_equal(index.vectors, alpha.embed(raw))
    for j in range(DIM):
        value, tol = index.approx(j)
        assert np.all(np.abs(value - raw[:, j]) <= tol)
    per_market = index.nbytes / len(index)
    assert 92 <= per_market <= 92 * 1.0625 + 1 < 100
    assert not index.kept


def test_approximations_are_within_their_bound_or_kept_exact() -> None:
    """Every component of every row is within ``tol`` of its exact value, recovered exactly
    where the mask says so, or its row is kept exactly (and only such rows are)."""
    rng = np.random.default_rng(11)
    n = 4000
    raw = rng.normal(size=(n, DIM)) * 10.0 ** rng.integers(-8, 9, size=(n, DIM))
    raw[rng.random((n, DIM)) < 0.2] = 0.0
    raw[rng.random((n, DIM)) < 0.05] = -0.0  # the compression loses the sign: see below
    raw[:, [alpha.INDEX[name] for name in alpha.UNBOUNDED]] += 0.0
    raw[:, alpha.INDEX["rsi14"]] = rng.choice([0.0, 0.5, 1.0, 0.123456], size=n)
    raw[:, alpha.INDEX["hour_of_day"]] = rng.integers(0, 24, size=n) / 23.0
    for name in alpha.UNBOUNDED:  # mana sums up to 1e300
        raw[:, alpha.INDEX[name]] *= 10.0 ** rng.integers(0, 300, size=n)
    raw[:50] = 0.0  # all-zero rows
    raw[50, 3] = 1e-300  # below float32 range next to the others: vector component 0
    raw[51, 5] = 1e-39  # float32 subnormal after scaling
    raw[52, alpha.INDEX["obv"]] = -0.0  # stored as +0.0
    raw[53, 7] = 1e300  # the norm overflows
    index = Store().index()
    index.upsert([f"m{i}" for i in range(n)], raw)
    assert sorted(index.kept) == [50, 51, 52, 53]
    rows = np.arange(n)
    for j in range(DIM):
        value, tol = index.approx(j)
        assert np.all(np.abs(value - raw[:, j]) <= tol / 2)
        exact = tol == 0
        assert np.array_equal(np.signbit(value[exact]), np.signbit(raw[exact, j]))
        assert np.array_equal(value[exact], raw[exact, j])
        easy = index.recoverable(rows, j)
        found = vectors.recover(value[easy], j)
        assert np.array_equal(found, raw[easy, j])
        assert np.array_equal(np.signbit(found), np.signbit(raw[easy, j]))
    assert index.recoverable(rows[60:], alpha.INDEX["rsi14"]).all()
    assert index.recoverable(rows[60:], alpha.INDEX["hour_of_day"]).all()


def test_values_within_the_bound_of_a_threshold_are_read_back() -> None:
    """Markets a float64 step, or a part of a float32 step, from the threshold: the
    approximation cannot tell their side, so exactly those are read (and only those)."""
    base = np.full(DIM, 0.3)
    j = alpha.INDEX["sma10"]
    near = [0.7, math.nextafter(0.7, 1), math.nextafter(0.7, 0), 0.7 * (1 + 2.0**-26),
            0.7 * (1 - 2.0**-26), 0.7000001, 0.6999999]
    far = [0.69, 0.71, 0.0, 1.0]
    ms = {}
    for i, x in enumerate(near + far):
        row = base.copy()
        row[j] = x
        ms[f"m-{i:02d}"] = row
    store = Store(ms)
    parts = split(ms, 2, store=store)
    for op in sorted(vectors.OPS):
        spec = Screen((Condition("sma10", op, 0.7),), "sma10", False, 100)
        store.reads = 0
        assert indexed_screen(parts, spec) == brute_screen(ms, spec)
        # the near ones straddle 0.7 (their float32 vectors all round alike), 0.7000001
        # and 0.6999999 are decided without reading; shown values are read
        assert store.reads <= len(ms)


def test_huge_unbounded_values_sort_exactly() -> None:
    """obv near 1e15 and 1e300 differing in the last float64 bits: equal after float32
    rounding and expm1, in exact order (ties by id) once read."""
    rng = np.random.default_rng(2)
    j = alpha.INDEX["obv"]
    ms = {}
    values = [1e15, 1e15 + 0.125, 1e15 - 0.125, 1e15 + 2, 1e300, math.nextafter(1e300, 0),
              -1e300, 1e15, 1e300]
    for i, x in enumerate(values * 3):
        row = rng.uniform(0.1, 0.9, size=DIM)
        row[j] = x
        ms[f"m-{rng.integers(1000):03d}-{i:02d}"] = row
    for descending in (True, False):
        for limit in (1, 2, 3, 5, 8, 30):
            spec = Screen((Condition("obv", "gt", 1e15),), "obv", descending, limit)
            assert indexed_screen(split(ms, 3), spec) == brute_screen(ms, spec)
            spec = Screen((), "obv", descending, limit)
            assert indexed_screen(split(ms, 2), spec) == brute_screen(ms, spec)


def test_equal_values_across_markets_keep_id_order_read_or_not() -> None:
    """Thousands of markets with one value: recovered (1.0) nothing is read; not
    recoverable (0.1234567891) the group straddling the cut is read, in id order either way."""
    rng = np.random.default_rng(4)
    n = 3000
    raw = rng.uniform(0.1, 0.9, size=(n, DIM))
    raw[:, alpha.INDEX["rsi14"]] = rng.choice([0.0, 1.0], size=n)
    raw[:, alpha.INDEX["sma20"]] = rng.choice([0.1234567891, 0.2], size=n)
    names = [f"m-{i:05d}" for i in rng.permutation(n)]
    ms = dict(zip(names, raw, strict=True))
    store = Store(ms)
    parts = split(ms, 3, ranked=0.5, store=store)
    spec = Screen((Condition("rsi14", "gt", 0.5),), "rsi14", True, 40)
    store.reads = 0
    assert indexed_screen(parts, spec) == brute_screen(ms, spec)
    assert store.reads == 0
    spec = Screen((Condition("sma20", "lt", 0.15),), "sma20", True, 40)
    assert indexed_screen(parts, spec) == brute_screen(ms, spec)
    assert 0 < store.reads <= n


def test_ties_beyond_the_limit_are_broken_by_id_ranked_or_not() -> None:
    """Thousands of equal values: the first ids win, whether ranked or added since."""
    rng = np.random.default_rng(9)
    names = [f"m-{i:05d}" for i in rng.permutation(5000)]
    raw = np.zeros((5000, DIM))
    raw[:, alpha.INDEX["rsi14"]] = rng.choice([0.0, 1.0], size=5000)
    store = Store()
    index = store.index()
    store.put(index, names[:3000], raw[:3000])
    spec = Screen((Condition("rsi14", "gt", 0.5),), "rsi14", True, 40)
    want = sorted(m for m, r in zip(names, raw, strict=True)
                  if r[alpha.INDEX["rsi14"]] > 0.5)[:40]
    assert [m for m, _ in vectors.screen([index], spec)] != want  # not all there yet
    store.put(index, names[3000:], raw[3000:])  # 2000 rows after the rank: ranked again
    assert [m for m, _ in vectors.screen([index], spec)] == want
    index.rerank_min = 10**9
    extra = [f"m-0000{i}x" for i in range(5)]  # unranked rows that sort first
    store.put(index, extra, np.tile(raw[names.index(want[0])], (5, 1)))
    assert [m for m, _ in vectors.screen([index], spec)] == sorted(extra + want)[:40]


def _encode_by_column(raw: np.ndarray) -> tuple[np.ndarray, ...]:
    """What an index stores of each row, component by component with the column functions
    (approx, recover, and the spacing recover_columns gives): the reference for the
    whole-matrix encode_rows."""
    exact = np.zeros(len(raw), dtype=np.uint32)
    fine = np.ones(len(raw), dtype=bool)
    with np.errstate(all="ignore"):
        vecs, norms = alpha.embed_with_norms(raw)
        scales = norms.astype(np.float32)
        for j in range(alpha.DIM):
            want = raw[:, j]
            value, tol = vectors.approx(vecs[:, j], scales, j)
            same = (value == want) & (np.signbit(value) == np.signbit(want))
            off = np.abs(value - want)
            fine &= same | ((tol > 0) & (off <= tol / 2))
            found = vectors.recover(value, j)
            hit = (found == want) & (np.signbit(found) == np.signbit(want)) & (
                off <= vectors.recover_columns(value[:, None], [j])[1][:, 0] / 4)
            exact |= hit.astype(np.uint32) << np.uint32(j)
    return vecs, scales, exact, fine


def test_encode_rows_stores_the_same_bits_as_the_column_functions() -> None:
    rng = np.random.default_rng(1)
    for _ in range(100):
        n = int(rng.integers(1, 300))
        raw = rng.normal(size=(n, alpha.DIM)) * 10.0 ** rng.integers(-30, 30, (n, alpha.DIM))
        raw[rng.random(raw.shape) < 0.3] = round(float(rng.random()), 3)  # decimals
        raw[rng.random(raw.shape) < 0.1] = 0.0
        raw[rng.random(raw.shape) < 0.02] = -0.0
        raw[rng.random(raw.shape) < 0.01] = 1e308  # overflows: kept rows
        raw[:, alpha.INDEX["hour_of_day"]] = rng.integers(0, 24, n) / 23
        raw[:, alpha.INDEX["rsi14"]] = rng.choice([0.0, 0.5, 1.0], n)
        got, want = vectors.encode_rows(raw), _encode_by_column(raw)
        for g, w in zip(got, want, strict=True):
            assert g.dtype == w.dtype and g.tobytes() == w.tobytes()
