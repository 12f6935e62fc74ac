"""Alpha vectors of a partition's markets, in memory, and exact queries over them
(similar markets, screens).

Pure numpy (no Faust, no RocksDB). A :class:`PartitionIndex` holds, for every market of
one partition, its current stored alpha vector (``alpha.embed`` of the raw vector: unit
length, float32) and what it takes to get the raw components back from it: 92 bytes a
market (the vector 80, the norm it was divided by as float32 4, a recovery mask 4, an id
rank 4), not the 160 bytes of float64 raw columns. The stream keeps one per partition the
worker owns (gswarm/stream/vectors.py).

Similarity is exact. Scores are defined as the correctly rounded float64 value of the
exact dot product of the float32 vectors (the products of two float32 are exact in float64,
:func:`math.fsum` adds them exactly), so a score never depends on how a BLAS kernel blocks
its sums. A query takes a float32 matrix-vector product over every row (a few ms per
million rows) to find the candidates, then computes the exact scores of those within
:data:`MARGIN` of the k-th: the float32 product is within ~21 * 2**-24 of the exact score
(20 products of unit vectors), far inside the margin, so no market of the exact answer or
tied with its last score is missed. Ties are broken by market id, as everywhere.

Screens compare the exact float64 raw components, but most markets are decided without
them. A component is approximately ``vector * norm`` (unbounded components: then
``sign * expm1(|.|)``, the inverse of the compression); :func:`approx` gives that value and
a bound ``tol`` on its distance to the exact one, ``|x| * 2**-21`` (unbounded:
``* (1 + |squashed x|)``, expm1 amplifies the error), eight times the worst float32
rounding. The bound is not trusted from the analysis alone: every upsert checks it on the
market's real values (to half of it, so a last-bit difference between two evaluations of
expm1 cannot matter) and keeps the exact raw vector of a market that fails it (non-finite
values, values below float32 range relative to the rest; none in practice). A value known
exactly has ``tol`` 0 (zeros, those kept markets).

A condition is decided from the interval ``[x - tol, x + tol]`` wherever the whole
interval is on one side of the threshold; the few markets whose interval straddles it are
decided on their exact values. Sorting keeps the markets whose interval could reach the
first ``limit`` places (the ``limit``-th smallest upper bound cuts), takes their exact
values, then sorts exactly by (value, market id). Exact values come, without reading
anything, from the recovery mask: bit ``j`` is set when component ``j`` is recovered
exactly by rounding the approximation to 6 significant digits (``1.0``, ``0.5``,
``0.123456``: decimal inputs and the RSI of a few ticks, which tie by the thousand) or to
the grid of a time feature (``hour / 23``); the upsert checks it on the real value, with
the approximation within a quarter of a grid step. Otherwise they are read from the
market's stored record through the index's ``source`` (the same values the reference scan
reads). An answer's component values are exact too, recovered or read the same way.
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

#: The exact raw alpha vectors (one row each, :data:`alpha.COMPONENTS` order) of markets an
#: index holds, as stored: what the reference scan reads. Asked only for the few markets
#: whose approximate values do not settle a query.
Source = Callable[[Sequence[str]], F64]

#: Bound used on |float32 score - exact score|; the real error is below 2e-6.
MARGIN = 1e-5
#: Relative bound on |approximate component - exact component| (times ``1 + |squashed|``
#: for the unbounded ones); the float32 vector and norm err by at most ~2**-23 together.
REL = 2.0**-21
_GROWTH = 1.0625  # capacity grows by a sixteenth: at most ~6 % of the arrays unused
_MIN_CAPACITY = 256
_UNBOUNDED = frozenset(alpha.INDEX[name] for name in alpha.UNBOUNDED)
_UNBOUNDED_LIST = sorted(_UNBOUNDED)
#: Components that are an integer over a fixed denominator (alpha's time features).
_GRIDS = {alpha.INDEX["hour_of_day"]: 23.0, alpha.INDEX["weekday"]: 6.0,
          alpha.INDEX["seconds_of_day"]: 86399.0}
_DIGITS = 6  # significant digits a recovered decimal has at most
_LOW = -17  # decimal exponents with a recovery: 10**(_DIGITS - 1 - e) within 10**±22
_DECADES = np.array([float(f"1e{e}") for e in range(_LOW, 28)])
_POW10 = np.array([float(10**k) for k in range(23)])  # exact

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


def approx(vectors: F32, scales: F32, component: int) -> tuple[F64, F64]:
    """Component ``component`` of each market from its stored vector (one column) and norm:
    the approximate value and the bound ``tol`` on its distance to the exact one."""
    value, tol = approx_columns(vectors[:, None], scales, [component])
    return value[:, 0], tol[:, 0]


def approx_columns(vectors: F32, scales: F32, components: Sequence[int],
                   ) -> tuple[F64, F64]:
    """:func:`approx` of several components at once: column ``c`` of ``vectors`` is
    component ``components[c]`` (element by element the same arithmetic)."""
    squashed = vectors.astype(np.float64) * scales.astype(np.float64)[:, None]
    grown = np.isin(components, _UNBOUNDED_LIST)
    if not grown.any():
        return squashed, np.abs(squashed) * REL
    value = squashed.copy()
    tol = np.empty_like(squashed)
    tol[:, ~grown] = np.abs(squashed[:, ~grown]) * REL
    part = squashed[:, grown]
    value[:, grown] = np.copysign(np.expm1(np.abs(part)), part)
    tol[:, grown] = np.abs(value[:, grown]) * (REL * (1.0 + np.abs(part)))
    return value, tol


def recover(value: F64, component: int) -> F64:
    """The value ``value`` approximates if it is a short one (6 significant digits, or on a
    time feature's grid); NaN where there is none (see :func:`recover_columns`)."""
    return recover_columns(value[:, None], [component])[0][:, 0]


def recover_columns(value: F64, components: Sequence[int]) -> tuple[F64, F64]:
    """:func:`recover` of several components at once (column ``c`` of ``value`` is component
    ``components[c]``), and the spacing of the values it gives near each value."""
    found = np.empty_like(value)
    step = np.empty_like(value)
    denoms = np.array([_GRIDS.get(int(j), 0.0) for j in components])
    grid = denoms > 0
    if grid.any():
        d = denoms[grid]
        found[:, grid] = np.rint(value[:, grid] * d) / d
        step[:, grid] = 1.0 / d
    if not grid.all():
        decimal = value[:, ~grid]
        shift = _shift(decimal)
        p = _POW10[np.minimum(np.abs(shift), 22)]
        with np.errstate(over="ignore"):  # only where the shift is out of range: NaN below
            near = np.where(shift >= 0, np.rint(decimal * p) / p, np.rint(decimal / p) * p)
        near[np.abs(shift) > 22] = np.nan
        found[:, ~grid] = near
        step[:, ~grid] = 10.0 ** -shift.astype(np.float64)
    return found, step


def _shift(value: F64) -> I64:
    """Decimals kept for 6 significant digits: ``value * 10**shift`` has 6 digits (zero:
    any, it stays zero); outside ±22 (a power of ten not exact in float64) none."""
    mag = np.abs(value)
    e = np.searchsorted(_DECADES, mag, side="right") - 1 + _LOW  # comparisons: stable
    shift: I64 = np.where(e >= _LOW, (_DIGITS - 1) - e, 99)
    shift[mag == 0] = 0
    return shift


_ALL = list(range(alpha.DIM))
_BITS = np.left_shift(np.uint32(1), np.arange(alpha.DIM, dtype=np.uint32))


def encode_rows(raw: F64) -> tuple[F32, F32, NDArray[np.uint32], NDArray[np.bool_]]:
    """What an index stores of each raw vector (row of ``raw``): the float32 unit vector,
    its norm, the recovery mask (bit ``j``: component ``j`` is recovered exactly, see
    :func:`recover`) and whether every component's approximation is within its bound (rows
    where it is not are kept exactly).

    :func:`approx_columns` and :func:`recover_columns` over every component at once."""
    with np.errstate(all="ignore"):  # overflows, NaN products: those rows are kept
        vectors, norms = alpha.embed_with_norms(raw)
        scales = norms.astype(np.float32)
        value, tol = approx_columns(vectors, scales, _ALL)
        same = (value == raw) & (np.signbit(value) == np.signbit(raw))
        off = np.abs(value - raw)
        fine = (same | ((tol > 0) & (off <= tol / 2))).all(axis=1)
        found, step = recover_columns(value, _ALL)
        hit = (found == raw) & (np.signbit(found) == np.signbit(raw)) & (off <= step / 4)
    exact = np.bitwise_or.reduce(np.where(hit, _BITS, np.uint32(0)), axis=1).astype(np.uint32)
    return vectors, scales, exact, fine


class PartitionIndex:
    """One partition's markets: an id per row, the unit vectors, their norms, the recovery
    masks and the id ranks.

    Rows are only ever added (a market keeps its row). Vectors are row-major (one
    matrix-vector product per query). ``_rank`` orders the rows by market id (ties of a
    screen are broken by id without comparing strings); it covers the first ``_ranked``
    rows and is redone once enough rows were added after it. ``source`` reads markets'
    exact raw vectors (see :data:`Source`).
    """

    def __init__(self, source: Source) -> None:
        self.source = source
        self.ids: list[str] = []
        self.rows: dict[str, int] = {}
        self._vectors: F32 = np.empty((0, alpha.DIM), dtype=np.float32)
        self._scales: F32 = np.empty(0, dtype=np.float32)
        self._exact: NDArray[np.uint32] = np.empty(0, dtype=np.uint32)
        self._rank: NDArray[np.int32] = np.empty(0, dtype=np.int32)
        self._ranked = 0
        #: rows whose approximation is not within its bound: row -> exact raw vector
        self.kept: dict[int, F64] = {}
        #: rows added since the last :meth:`rank` that a screen sorts as strings before it
        #: ranks again (and at least a sixteenth of the rows)
        self.rerank_min = 1024

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def vectors(self) -> F32:
        """The stored (unit, float32) alpha vectors, one row per market of :attr:`ids`."""
        return self._vectors[:len(self.ids)]

    def approx(self, component: int, rows: I64 | None = None) -> tuple[F64, F64]:
        """:func:`approx` of ``rows`` (default: every row); exact (``tol`` 0) for the
        :attr:`kept` rows."""
        n = len(self.ids)
        vectors, scales = ((self._vectors[:n, component], self._scales[:n]) if rows is None
                           else (self._vectors[rows, component], self._scales[rows]))
        with np.errstate(all="ignore"):  # kept rows: inf norms, NaN products
            value, tol = approx(vectors, scales, component)
        if self.kept:
            kept = np.fromiter(self.kept, np.int64, len(self.kept))
            at = kept if rows is None else np.flatnonzero(np.isin(rows, kept))
            if len(at):
                held = kept if rows is None else rows[at]
                value[at] = [self.kept[r][component] for r in held.tolist()]
                tol[at] = 0.0
        return value, tol

    def recoverable(self, rows: I64, component: int) -> NDArray[np.bool_]:
        """Whether :func:`recover` gives each row's exact value of ``component``."""
        return ((self._exact[rows] >> np.uint32(component)) & np.uint32(1)).astype(bool)

    @property
    def nbytes(self) -> int:
        """Bytes of the numeric arrays as allocated (spare rows too), and of kept rows."""
        return (self._vectors.nbytes + self._scales.nbytes + self._exact.nbytes
                + self._rank.nbytes + sum(raw.nbytes for raw in self.kept.values()))

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
        vectors, scales, exact, fine = encode_rows(raw)
        self._vectors[at], self._scales[at], self._exact[at] = vectors, scales, exact
        for row, ok, values in zip(at.tolist(), fine.tolist(), raw, strict=True):
            if not ok:
                self.kept[row] = values.copy()
            elif self.kept:
                self.kept.pop(row, None)

    def _reserve(self, rows: int) -> None:
        if rows <= len(self._vectors):
            return
        capacity = max(rows, int(len(self._vectors) * _GROWTH), _MIN_CAPACITY)
        used = len(self._vectors)
        vectors = np.zeros((capacity, alpha.DIM), dtype=np.float32)
        vectors[:used] = self._vectors
        self._vectors = vectors
        for name in ("_scales", "_exact", "_rank"):
            old = getattr(self, name)
            new = np.zeros(capacity, dtype=old.dtype)
            new[:used] = old
            setattr(self, name, new)

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


class _Values:
    """One query's view of one partition's components: approximate values, and exact ones
    of chosen rows (recovered, or read once per market)."""

    def __init__(self, part: PartitionIndex) -> None:
        self.part = part
        self.read: dict[int, F64] = {}
        self.columns: dict[int, tuple[F64, F64]] = {}  # whole columns computed so far

    def approx(self, component: int, rows: I64) -> tuple[F64, F64]:
        """:meth:`PartitionIndex.approx` of ``rows``, from a whole column if one is known."""
        column = self.columns.get(component)
        if column is None:
            return self.part.approx(component, rows)
        return column[0][rows], column[1][rows]

    def exact(self, rows: I64, component: int,
              known: tuple[F64, F64] | None = None) -> F64:
        """The exact values of ``component`` of ``rows`` (``known``: their :meth:`approx`)."""
        out, tol = self.approx(component, rows) if known is None else known
        out = out.copy()
        unsure = np.flatnonzero(tol > 0)
        if not len(unsure):
            return out
        easy = self.part.recoverable(rows[unsure], component)
        if easy.any():
            out[unsure[easy]] = recover(out[unsure[easy]], component)
        hard = unsure[~easy]
        if len(hard):
            out[hard] = self.raw(rows[hard])[:, component]
        return out

    def raw(self, rows: I64) -> F64:
        """The exact raw vectors of ``rows``, read from the source (each row once)."""
        wanted = rows.tolist()
        missing = list(dict.fromkeys(r for r in wanted if r not in self.read))
        if missing:
            got = np.asarray(self.part.source([self.part.ids[r] for r in missing]),
                             dtype=np.float64).reshape(len(missing), alpha.DIM)
            self.read.update(zip(missing, got, strict=True))
        return np.vstack([self.read[r] for r in wanted])

    def passing(self, conditions: Sequence[Condition]) -> I64:
        """Rows for which every condition holds: decided on the intervals, and on exact
        values where an interval straddles the threshold (each condition looks only at
        the rows that passed the ones before)."""
        rows: I64 | None = None
        for c in conditions:
            j, op = alpha.INDEX[c.component], OPS[c.op][0]
            value, tol = self.part.approx(j, rows)
            if rows is None:
                self.columns[j] = value, tol
                rows = np.arange(len(self.part))
            if j in _UNBOUNDED or self.part.kept:
                low, high = op(value - tol, c.value), op(value + tol, c.value)
                unsure = np.flatnonzero(low != high)
                passed = low & high
            else:
                # tol = |x| * REL here: outside [v - w, v + w], w = 4 * REL * |v|, the
                # whole interval is on x's side of v (|x - v| > w implies |x - v| > 2 tol)
                w = 4 * REL * abs(c.value)
                above, below = value > c.value + w, value < c.value - w
                passed = above if c.op in ("gt", "ge") else below
                unsure = np.flatnonzero(~(above | below))
            if len(unsure):
                passed[unsure] = op(self.exact(rows[unsure], j), c.value)
            rows = rows[passed]
        return np.arange(len(self.part)) if rows is None else rows


def screen(parts: Iterable[PartitionIndex], spec: Screen) -> list[tuple[str, list[float]]]:
    """(market, exact values of ``spec.components``) of the markets that pass, in the
    screen's order."""
    views = [_Values(p) for p in parts if len(p)]
    sort, sign = alpha.INDEX[spec.sort], (-1.0 if spec.descending else 1.0)
    rows = [v.passing(spec.conditions) for v in views]
    near = [v.approx(sort, r) for v, r in zip(views, rows, strict=True)]
    if sum(map(len, rows)) > spec.limit:
        # the markets that could be among the first `limit`: lower bound of their key at
        # most the limit-th smallest upper bound
        bounds = [(sign * value - tol, sign * value + tol) for value, tol in near]
        cut = np.partition(np.concatenate([hi for _, hi in bounds]), spec.limit - 1)[
            spec.limit - 1]
        within = [lo <= cut for lo, _ in bounds]
        rows = [r[w] for r, w in zip(rows, within, strict=True)]
        near = [(value[w], tol[w]) for (value, tol), w in zip(near, within, strict=True)]
    keys = [sign * v.exact(r, sort, a) for v, r, a in zip(views, rows, near, strict=True)]
    if sum(map(len, rows)) > spec.limit:
        last = np.partition(np.concatenate(keys), spec.limit - 1)[spec.limit - 1]
        better = sum(int(np.count_nonzero(k < last)) for k in keys)
        picked = [(r[k < last], v.part.first_by_id(r[k == last], spec.limit - better))
                  for v, r, k in zip(views, rows, keys, strict=True)]
        keys = [np.concatenate((k[k < last], np.full(len(tied), last)))
                for k, (_, tied) in zip(keys, picked, strict=True)]
        rows = [np.concatenate(pair) for pair in picked]
    order: list[tuple[float, str, int, int]] = []
    for i, (v, r, k) in enumerate(zip(views, rows, keys, strict=True)):
        order += [(key, v.part.ids[row], i, row)
                  for key, row in zip(k.tolist(), r.tolist(), strict=True)]
    order.sort(key=lambda x: (x[0], x[1]))
    order = order[:spec.limit]
    shown = [alpha.INDEX[c] for c in spec.components]
    values: dict[tuple[int, int], list[float]] = {}
    for i, v in enumerate(views):
        mine = np.array([row for _, _, at, row in order if at == i], dtype=np.int64)
        if len(mine):
            table = np.column_stack([v.exact(mine, j) for j in shown]).tolist()
            values.update(zip(((i, row) for row in mine.tolist()), table, strict=True))
    return [(market, values[i, row]) for _, market, i, row in order]
