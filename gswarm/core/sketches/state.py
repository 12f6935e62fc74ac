"""One partition's sketches, with the last source offset they applied.

Kept as one value in a changelogged table per partition, so the sketch and the offset it
reflects always change together: after a crash, messages up to ``last_offset`` are not
counted again, later ones are. Ticks are applied in partition order, which makes the
state a function of the partition's message sequence only (never of batch boundaries):
after any crash it equals, bit for bit, the state of a run without one.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from gswarm.core.sketches import frames
from gswarm.core.sketches.cms import CountMinSketch
from gswarm.core.sketches.hashing import hash_ids
from gswarm.core.sketches.hll import HyperLogLog
from gswarm.core.sketches.topk import TopK, rank
from gswarm.core.sketches.window import WindowRing

VERSION = 1
_HEAD = struct.Struct("<Bqq")

#: Global frequency sketch: estimates within 0.2 % of the partition's ticks w.p. 99 %.
FREQ_EPSILON, FREQ_DELTA = 0.002, 0.01


@dataclass(slots=True)
class CountedTick:
    """What the sketches need of a tick, with its position in the partition (slotted, not
    frozen: one is built per tick, see :class:`gswarm.core.ingest.Arrival`)."""

    offset: int
    index: int
    market: str
    trader: str
    ts: int


@dataclass
class PartitionSketches:
    """Unique markets and traders, tick frequency per market, hot markets, windows."""

    last_offset: int = -1
    ticks: int = 0
    markets: HyperLogLog = field(default_factory=lambda: HyperLogLog(14))
    traders: HyperLogLog = field(default_factory=lambda: HyperLogLog(14))
    freq: CountMinSketch = field(
        default_factory=lambda: CountMinSketch.from_error(FREQ_EPSILON, FREQ_DELTA))
    top: TopK = field(default_factory=lambda: TopK(64))
    window: WindowRing = field(default_factory=WindowRing)

    def apply(self, ticks: Iterable[CountedTick]) -> int:
        """Apply ticks of messages after ``last_offset``, in partition order; return count."""
        todo = sorted((t for t in ticks if t.offset > self.last_offset),
                      key=lambda t: (t.offset, t.index))
        if not todo:
            return 0
        markets = [t.market for t in todo]
        mh = hash_ids(markets)
        th = hash_ids([t.trader for t in todo])
        self.markets.update(mh)
        self.traders.update(th)
        runs = self.freq.update(mh)
        self.top.offer_many((markets[pos], est) for pos, est in runs)
        ts = np.fromiter((t.ts for t in todo), dtype=np.int64, count=len(todo))
        self.window.update(ts, markets, mh, th)
        self.ticks += len(todo)
        self.last_offset = todo[-1].offset
        return len(todo)

    def to_bytes(self) -> bytes:
        return frames.pack((
            _HEAD.pack(VERSION, self.last_offset, self.ticks), self.markets.to_bytes(),
            self.traders.to_bytes(), self.freq.to_bytes(), self.top.to_bytes(),
            self.window.to_bytes(),
        ))

    @classmethod
    def from_bytes(cls, data: bytes) -> PartitionSketches:
        parts = frames.unpack(data)
        if not parts or len(parts[0]) != _HEAD.size or parts[0][0] != VERSION:
            raise ValueError("unknown partition sketch format")
        _, last, ticks = _HEAD.unpack(parts[0])
        return cls(last, ticks, HyperLogLog.from_bytes(parts[1]),
                   HyperLogLog.from_bytes(parts[2]), CountMinSketch.from_bytes(parts[3]),
                   TopK.from_bytes(parts[4]), WindowRing.from_bytes(parts[5]))


@dataclass
class MergedSketches:
    """Sketches of several partitions combined (cluster-wide answers)."""

    markets: HyperLogLog
    traders: HyperLogLog
    freq: CountMinSketch
    candidates: set[str]
    window: WindowRing
    ticks: int

    @classmethod
    def of(cls, parts: Sequence[PartitionSketches]) -> MergedSketches:
        empty = PartitionSketches()
        merged = cls(empty.markets, empty.traders, empty.freq, set(), empty.window, 0)
        for p in parts:
            merged.markets.merge(p.markets)
            merged.traders.merge(p.traders)
            merged.freq.merge(p.freq)
            merged.candidates |= p.top.candidates.keys()
            merged.window.merge(p.window)
            merged.ticks += p.ticks
        return merged

    def hot(self, k: int, window_ms: int | None = None) -> list[tuple[str, int]]:
        """The ``k`` markets with the most ticks, overall or in the newest window."""
        if window_ms is None:
            freq, candidates = self.freq, self.candidates
        else:
            freq, _, candidates = self.window.merged(window_ms)
        keys = sorted(candidates)
        est = freq.query(hash_ids(keys)).tolist() if keys else []
        return rank(dict(zip(keys, est, strict=True)), k)

    def unique_traders(self, window_ms: int | None = None) -> float:
        if window_ms is None:
            return self.traders.estimate()
        return self.window.merged(window_ms)[1].estimate()
