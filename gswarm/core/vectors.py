"""Alpha vectors and screen columns of a partition's markets, in memory, and exact queries
over them.

Pure numpy (no Faust, no RocksDB). A :class:`PartitionIndex` holds, for every market of
one partition, its current stored alpha vector (``alpha.embed`` of the raw vector: unit
length, float32) and its raw components (float64, what a screen compares), one row per
market. The stream keeps one per partition the worker owns (gswarm/stream/vectors.py).

Similarity is exact. Scores are defined as the correctly rounded float64 value of the
exact dot product of the float32 vectors (the products of two float32 are exact in float64,
:func:`math.fsum` adds them exactly), so a score never depends on how a BLAS kernel blocks
its sums. A query takes a float32 matrix-vector product over every row (a few ms per
million rows) to find the candidates, then computes the exact scores of those within
:data:`MARGIN` of the k-th: the float32 product is within ~21 * 2**-24 of the exact score
(20 products of unit vectors), far inside the margin, so no market of the exact answer or
tied with its last score is missed. Ties are broken by market id, as everywhere.

Screens compare the float64 columns exactly and sort by (value, market id).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from gswarm.core import alpha

F32 = NDArray[np.float32]
F64 = NDArray[np.float64]
I64 = NDArray[np.int64]

#: Bound used on |float32 score - exact score|; the real error is below 2e-6.
MARGIN = 1e-5
_GROWTH = 1.25  # capacity grows by a quarter: at most ~25 % of the arrays unused
_MIN_CAPACITY = 256

#: Comparison operators of a screen condition: numpy's (columns) and Python's (a record).
OPS: dict[str, tuple[Callable[[F64, float], NDArray[np.bool_]], Callable[[float, float], bool]]]
OPS = {
    "gt": (np.greater, operator.gt), "ge": (np.greater_equal, operator.ge),
    "lt": (np.less, operator.lt), "le": (np.less_equal, operator.le),
}


def exact_scores(rows: F32, target: F32) -> F64:
    """The cosine score of each row against ``target``: exact dot product, rounded once."""
    products = rows.astype(np.float64) * target.astype(np.float64)  # exact
    return np.fromiter(map(math.fsum, products.tolist()), np.float64, len(rows))


class PartitionIndex:
    """One partition's markets: an id per row, the unit vectors and the raw columns.

    Rows are only ever added (a market keeps its row). Vectors are row-major (one
    matrix-vector product per query); the raw components are column-major, so a screen's
    comparison reads one contiguous column. ``_rank`` orders the rows by market id (ties
    of a screen are broken by id without comparing strings); it covers the first
    ``_ranked`` rows and is redone once enough rows were added after it.
    """

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.rows: dict[str, int] = {}
        self._vectors: F32 = np.empty((0, alpha.DIM), dtype=np.float32)
        self._columns: F64 = np.empty((alpha.DIM, 0), dtype=np.float64)
        self._rank: NDArray[np.int32] = np.empty(0, dtype=np.int32)
        self._ranked = 0
        #: rows added since the last :meth:`rank` that a screen sorts as strings before it
        #: ranks again (and at least a sixteenth of the rows)
        self.rerank_min = 1024

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def vectors(self) -> F32:
        """The stored (unit, float32) alpha vectors, one row per market of :attr:`ids`."""
        return self._vectors[:len(self.ids)]

    @property
    def columns(self) -> F64:
        """The raw alpha components, one row per market of :attr:`ids` (a view)."""
        return self._columns[:, :len(self.ids)].T

    def column(self, component: str) -> F64:
        """One raw component of every market, contiguous."""
        return self._columns[alpha.INDEX[component], :len(self.ids)]

    @property
    def nbytes(self) -> int:
        """Bytes of the numeric arrays as allocated (spare rows too)."""
        return self._vectors.nbytes + self._columns.nbytes + self._rank.nbytes

    def upsert(self, markets: Sequence[str], raw: F64) -> None:
        """Set the current raw alpha vector of each market (new markets get a row)."""
        self._put(markets, raw, replace=True)

    def fill(self, markets: Sequence[str], raw: F64) -> None:
        """Add markets not held yet; a market already held keeps its row as it is.

        A rebuild reads the stored records while the ingest keeps upserting newer values:
        what the ingest wrote wins.
        """
        self._put(markets, raw, replace=False)

    def _put(self, markets: Sequence[str], raw: F64, replace: bool) -> None:
        if not len(markets):
            return
        raw = np.asarray(raw, dtype=np.float64).reshape(len(markets), alpha.DIM)
        at = np.empty(len(markets), dtype=np.int64)
        keep = np.ones(len(markets), dtype=bool)
        for i, market in enumerate(markets):
            row = self.rows.get(market)
            if row is None:
                row = self.rows[market] = len(self.ids)
                self.ids.append(market)
            elif not replace:
                keep[i] = False
            at[i] = row
        self._reserve(len(self.ids))
        if not keep.all():
            at, raw = at[keep], raw[keep]
        self._vectors[at] = alpha.embed(raw)
        self._columns[:, at] = raw.T

    def _reserve(self, rows: int) -> None:
        if rows <= len(self._vectors):
            return
        capacity = max(rows, int(len(self._vectors) * _GROWTH), _MIN_CAPACITY)
        vectors = np.zeros((capacity, alpha.DIM), dtype=np.float32)
        columns = np.zeros((alpha.DIM, capacity), dtype=np.float64)
        rank = np.zeros(capacity, dtype=np.int32)
        used = len(self._vectors)
        vectors[:used], columns[:, :used], rank[:used] = (
            self._vectors, self._columns, self._rank)
        self._vectors, self._columns, self._rank = vectors, columns, rank

    def vector(self, market: str) -> F32 | None:
        """The market's stored vector, or None if this partition does not hold it."""
        row = self.rows.get(market)
        return None if row is None else self._vectors[row].copy()

    def rank(self) -> None:
        """Order every row by market id (a rebuild does it once it has read every record;
        later, :meth:`first_by_id` does it again once enough rows were added)."""
        n = len(self.ids)
        order = sorted(range(n), key=self.ids.__getitem__)
        self._rank[order] = np.arange(n, dtype=np.int32)
        self._ranked = n

    def first_by_id(self, rows: I64, count: int) -> I64:
        """The ``count`` rows of ``rows`` whose market ids sort first (any order)."""
        if count >= len(rows):
            return rows
        n = len(self.ids)
        if n - self._ranked > max(self.rerank_min, n // 16):
            self.rank()
        ranked, fresh = rows[rows < self._ranked], rows[rows >= self._ranked]
        if len(ranked) > count:
            ranked = ranked[np.argpartition(self._rank[ranked], count - 1)[:count]]
        picked = ranked.tolist() + fresh.tolist()
        picked.sort(key=self.ids.__getitem__)
        return np.array(picked[:count], dtype=np.int64)


def similar(
    parts: Iterable[PartitionIndex], target: F32, k: int, min_score: float = -1.0,
    exclude: Iterable[str] = (),
) -> list[tuple[str, float]]:
    """Top-k (market, score) by exact cosine score, best first, ties by market id."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return []
    target = np.asarray(target, dtype=np.float32)
    # einsum's own loop, not BLAS: OpenBLAS threads spin against the worker's other work on
    # a busy 2-core machine (1M rows: 23-155 ms with them, ~10 ms with einsum)
    approx = [np.einsum("ij,j->i", p.vectors, target) for p in parts]
    banned = set(exclude)
    for p, scores in zip(parts, approx, strict=True):
        for market in banned:
            row = p.rows.get(market)
            if row is not None:
                scores[row] = -np.inf
    every = np.concatenate(approx)
    floor = min_score - MARGIN
    if len(every) > k:
        kth = float(np.partition(every, len(every) - k)[len(every) - k])
        floor = max(floor, kth - 2 * MARGIN)
    hits: list[tuple[float, str]] = []
    for p, scores in zip(parts, approx, strict=True):
        rows = np.flatnonzero(scores >= floor)
        exact = exact_scores(p.vectors[rows], target)
        hits += [(-s, p.ids[r]) for r, s in zip(rows.tolist(), exact.tolist(), strict=True)
                 if s >= min_score]
    hits.sort()
    return [(market, -neg) for neg, market in hits[:k]]


@dataclass(frozen=True)
class Condition:
    """``component op value``, e.g. ``rsi14 gt 0.7``."""

    component: str
    op: str
    value: float

    def holds(self, raw: Sequence[float]) -> bool:
        """The condition on one raw vector (in :data:`alpha.COMPONENTS` order)."""
        return OPS[self.op][1](raw[alpha.INDEX[self.component]], self.value)


@dataclass(frozen=True)
class Screen:
    """Conditions that must all hold, and the order of the answer.

    Markets are sorted by ``sort`` (a component), descending or not, then by market id;
    at most ``limit`` of them.
    """

    conditions: tuple[Condition, ...]
    sort: str
    descending: bool
    limit: int

    @property
    def components(self) -> list[str]:
        """The components an answer shows: those of the conditions, then the sort key."""
        names = [c.component for c in self.conditions] + [self.sort]
        return list(dict.fromkeys(names))

    def key(self, market: str, value: float) -> tuple[float, str]:
        """Where a market whose sort component is ``value`` goes in the answer."""
        return (-value if self.descending else value), market


def screen(parts: Iterable[PartitionIndex], spec: Screen) -> list[tuple[str, F64]]:
    """(market, raw vector) of the markets that pass, in the screen's order."""
    picked: list[tuple[float, str, PartitionIndex, int]] = []
    for p in parts:
        rows = _screen_rows(p, spec)
        keys = p.column(spec.sort)[rows]
        if spec.descending:
            keys = -keys
        picked += [(key, p.ids[row], p, row)
                   for key, row in zip(keys.tolist(), rows.tolist(), strict=True)]
    picked.sort(key=lambda x: (x[0], x[1]))
    return [(market, p.columns[row].copy()) for _, market, p, row in picked[:spec.limit]]


def _screen_rows(p: PartitionIndex, spec: Screen) -> I64:
    """Rows of ``p`` that pass and could be among the first ``limit`` (ties included)."""
    mask = np.ones(len(p), dtype=bool)
    for c in spec.conditions:
        mask &= OPS[c.op][0](p.column(c.component), c.value)
    rows = np.flatnonzero(mask)
    if len(rows) <= spec.limit:
        return rows
    keys = p.column(spec.sort)[rows]
    if spec.descending:
        keys = -keys
    last = keys[np.argpartition(keys, spec.limit - 1)[spec.limit - 1]]
    better = rows[keys < last]
    tied = p.first_by_id(rows[keys == last], spec.limit - len(better))
    return np.concatenate((better, tied))
