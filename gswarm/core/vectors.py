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

import heapq
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
    """One partition's markets: an id per row, the unit vectors and the raw columns."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.rows: dict[str, int] = {}
        self._vectors: F32 = np.empty((0, alpha.DIM), dtype=np.float32)
        self._columns: F64 = np.empty((0, alpha.DIM), dtype=np.float64)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def vectors(self) -> F32:
        """The stored (unit, float32) alpha vectors, one row per market of :attr:`ids`."""
        return self._vectors[:len(self.ids)]

    @property
    def columns(self) -> F64:
        """The raw alpha components, one row per market of :attr:`ids`."""
        return self._columns[:len(self.ids)]

    @property
    def nbytes(self) -> int:
        """Bytes of the numeric arrays as allocated (vectors and columns, spare rows too)."""
        return self._vectors.nbytes + self._columns.nbytes

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
        self._columns[at] = raw

    def _reserve(self, rows: int) -> None:
        if rows <= len(self._vectors):
            return
        capacity = max(rows, int(len(self._vectors) * _GROWTH), _MIN_CAPACITY)
        vectors = np.zeros((capacity, alpha.DIM), dtype=np.float32)
        columns = np.zeros((capacity, alpha.DIM), dtype=np.float64)
        used = len(self._vectors)
        vectors[:used], columns[:used] = self._vectors, self._columns
        self._vectors, self._columns = vectors, columns

    def vector(self, market: str) -> F32 | None:
        """The market's stored vector, or None if this partition does not hold it."""
        row = self.rows.get(market)
        return None if row is None else self._vectors[row].copy()


def similar(
    parts: Iterable[PartitionIndex], target: F32, k: int, min_score: float = -1.0,
    exclude: Iterable[str] = (),
) -> list[tuple[str, float]]:
    """Top-k (market, score) by exact cosine score, best first, ties by market id."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return []
    target = np.asarray(target, dtype=np.float32)
    approx = [p.vectors @ target for p in parts]
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
    picked: list[tuple[tuple[float, str], str, F64]] = []
    sort = alpha.INDEX[spec.sort]
    for p in parts:
        for row in _screen_rows(p, spec).tolist():
            raw = p.columns[row]
            picked.append((spec.key(p.ids[row], float(raw[sort])), p.ids[row], raw))
    picked.sort(key=lambda x: x[0])
    return [(market, raw) for _, market, raw in picked[:spec.limit]]


def _screen_rows(p: PartitionIndex, spec: Screen) -> I64:
    """Rows of ``p`` that pass and could be among the first ``limit`` (ties included)."""
    columns = p.columns
    mask = np.ones(len(p), dtype=bool)
    for c in spec.conditions:
        mask &= OPS[c.op][0](columns[:, alpha.INDEX[c.component]], c.value)
    rows = np.flatnonzero(mask)
    if len(rows) <= spec.limit:
        return rows
    keys = columns[rows, alpha.INDEX[spec.sort]]
    if spec.descending:
        keys = -keys
    last = keys[np.argpartition(keys, spec.limit - 1)[spec.limit - 1]]
    better = rows[keys < last]
    tied = rows[keys == last].tolist()
    first_ids = heapq.nsmallest(spec.limit - len(better), tied, key=p.ids.__getitem__)
    return np.concatenate((better, np.array(first_ids, dtype=np.int64)))
