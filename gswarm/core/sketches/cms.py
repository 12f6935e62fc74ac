"""Count-Min Sketch with conservative update.

``depth`` rows of ``width`` counters; a key's cell in row ``i`` comes from two 64-bit hashes
(Kirsch-Mitzenmacher: ``h1 + i*h2 mod width``). Sized from (ε, δ): ``width = ceil(e/ε)``,
``depth = ceil(ln(1/δ))``, so an estimate exceeds the true count by more than ``ε·N`` with
probability at most ``δ`` (``N`` = total weight). Estimates never undercount.

Conservative update raises only the cells that must rise: with estimate ``c`` before an
update of weight ``w``, each of the key's cells becomes ``max(cell, c + w)``. It is applied in
order, one run of equal consecutive keys at a time (a run of ``k`` unit updates of one key is
exactly one update of weight ``k``), so the counters depend on the sequence of keys only,
never on how it was split into batches. Plain update (``conservative=False``) is a
vectorised sum and is mergeable; a conservatively updated sketch merges by sum as well
(still never undercounting), which is how partitions combine.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Iterable

import numpy as np
from numpy.typing import NDArray

from gswarm.core.sketches.hashing import SMALL, rehash, splitmix64_int

U64 = NDArray[np.uint64]
VERSION = 1
_HEAD = struct.Struct("<BII")
_SALT = 0x5BD1E9955BD1E995
_MASK = 0xFFFFFFFFFFFFFFFF


class CountMinSketch:
    """A Count-Min Sketch of ``depth`` x ``width`` 64-bit counters."""

    __slots__ = ("counts", "depth", "width")

    def __init__(self, width: int, depth: int, counts: NDArray[np.uint64] | None = None):
        if width < 1 or depth < 1:
            raise ValueError(f"width and depth must be >= 1, got {width}x{depth}")
        self.width, self.depth = width, depth
        if counts is None:
            counts = np.zeros((depth, width), dtype=np.uint64)
        elif counts.shape != (depth, width):
            raise ValueError(f"expected counters of shape {(depth, width)}, got {counts.shape}")
        self.counts = counts

    @classmethod
    def from_error(cls, epsilon: float, delta: float) -> CountMinSketch:
        """Sized so that P(estimate > true + ε·N) <= δ."""
        if not 0 < epsilon < 1 or not 0 < delta < 1:
            raise ValueError(f"epsilon and delta must be in (0, 1), got {epsilon}, {delta}")
        return cls(math.ceil(math.e / epsilon), math.ceil(math.log(1 / delta)))

    @property
    def total(self) -> int:
        """N for plain updates (row sums are equal); an upper bound of N otherwise."""
        return int(self.counts[0].sum())

    def cells(self, hashes: U64) -> NDArray[np.intp]:
        """(len(hashes), depth) flat counter indices of each key."""
        h1 = np.asarray(hashes, dtype=np.uint64)
        h2 = rehash(h1, _SALT) | np.uint64(1)
        rows = np.arange(self.depth, dtype=np.uint64)
        with np.errstate(over="ignore"):
            col = (h1[:, None] + rows[None, :] * h2[:, None]) % np.uint64(self.width)
        return (rows[None, :] * np.uint64(self.width) + col).astype(np.intp)

    def update(self, hashes: U64, weights: NDArray[np.uint64] | None = None,
               conservative: bool = True) -> list[tuple[int, int]]:
        """Add each hash with its weight (default 1), in order.

        With conservative update, returns ``(position, estimate)`` for each run of equal
        consecutive hashes: the key's estimate right after its update (for top-k).
        """
        n = len(hashes)
        if n == 0:
            return []
        if conservative and n <= SMALL:
            return self._update_few(np.asarray(hashes, dtype=np.uint64).tolist(),
                                    [1] * n if weights is None else
                                    np.asarray(weights, np.uint64).tolist())
        w = np.ones(n, dtype=np.uint64) if weights is None else np.asarray(weights, np.uint64)
        cells = self.cells(hashes)
        flat = self.counts.reshape(-1)
        if not conservative:
            np.add.at(flat, cells.reshape(-1), np.repeat(w, self.depth))
            return []
        h = np.asarray(hashes, dtype=np.uint64)
        starts = np.flatnonzero(np.concatenate(([True], h[1:] != h[:-1])))
        run_w = np.add.reduceat(w, starts)
        touched = np.unique(cells[starts])
        local = dict(zip(touched.tolist(), flat[touched].tolist(), strict=True))
        out = _raise_runs(local, zip(starts.tolist(), cells[starts].tolist(), run_w.tolist(),
                                     strict=True))
        flat[touched] = np.fromiter((local[i] for i in touched.tolist()), dtype=np.uint64,
                                    count=len(touched))
        return out

    def cells_of(self, h1: int) -> list[int]:
        """:meth:`cells` of one hash, on Python integers."""
        h2 = splitmix64_int(h1 ^ _SALT) | 1
        width = self.width
        return [row * width + ((h1 + row * h2) & _MASK) % width for row in range(self.depth)]

    def _update_few(self, hashes: list[int], weights: list[int]) -> list[tuple[int, int]]:
        """The conservative update of a few hashes on Python integers (same counters and
        runs as the numpy form, without its fixed cost per call)."""
        runs = []
        pos, n = 0, len(hashes)
        while pos < n:
            h, weight, end = hashes[pos], weights[pos], pos + 1
            while end < n and hashes[end] == h:
                weight += weights[end]
                end += 1
            runs.append((pos, self.cells_of(h), weight))
            pos = end
        flat = self.counts.reshape(-1)
        local = {i: int(flat[i]) for _, idx, _ in runs for i in idx}
        out = _raise_runs(local, runs)
        for i, value in local.items():
            flat[i] = value
        return out

    def query(self, hashes: U64) -> U64:
        """Estimated counts (never below the true counts)."""
        if len(hashes) == 0:
            return np.zeros(0, dtype=np.uint64)
        est: U64 = self.counts.reshape(-1)[self.cells(hashes)].min(axis=1)
        return est

    def merge(self, other: CountMinSketch) -> None:
        """In place: add ``other``'s counters (same shape only)."""
        if (other.width, other.depth) != (self.width, self.depth):
            raise ValueError(
                f"cannot merge a {other.depth}x{other.width} CMS into a "
                f"{self.depth}x{self.width} one: shapes differ"
            )
        self.counts += other.counts

    def copy(self) -> CountMinSketch:
        return CountMinSketch(self.width, self.depth, self.counts.copy())

    def to_bytes(self) -> bytes:
        return _HEAD.pack(VERSION, self.width, self.depth) + zlib.compress(
            self.counts.astype("<u8").tobytes(), 1)

    @classmethod
    def from_bytes(cls, data: bytes) -> CountMinSketch:
        if len(data) < _HEAD.size:
            raise ValueError("CMS data too short")
        version, width, depth = _HEAD.unpack_from(data)
        if version != VERSION:
            raise ValueError(f"unknown CMS format version {version}")
        try:
            raw = zlib.decompress(data[_HEAD.size:])
        except zlib.error as exc:
            raise ValueError(f"corrupt CMS counters: {exc}") from exc
        counts = np.frombuffer(raw, dtype="<u8").astype(np.uint64).reshape(depth, width)
        return cls(width, depth, counts)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, CountMinSketch) and other.counts.shape == self.counts.shape
                and bool(np.array_equal(other.counts, self.counts)))

    __hash__ = None  # type: ignore[assignment]


def _raise_runs(local: dict[int, int],
                runs: Iterable[tuple[int, list[int], int]]) -> list[tuple[int, int]]:
    """Conservative update of ``local`` (cell -> counter), run by run in order: each run's
    cells rise to at least its estimate plus its weight; returns (position, estimate)."""
    out = []
    for pos, idx, weight in runs:
        target = min(local[i] for i in idx) + weight
        for i in idx:
            if local[i] < target:
                local[i] = target
        out.append((pos, target))
    return out
