"""Time-windowed sketches: a ring of per-slice sketches of event time, merged on query.

A tick lands in slice ``ts // slice_ms``. The ring keeps the newest ``slots`` slices seen;
a slice falls out when a tick of a slice ``slots`` newer arrives, and a tick older than the
ring is dropped (counted in ``late``: older than the ring as it stood when the tick came,
so a batch spanning more than the ring counts what a tick-by-tick run counts). The final
ring depends only on the sequence of ticks, not on how it was batched: a slice that
survives received exactly the ticks of its time, in order. "Hot markets in the last W
minutes" merges the newest ``ceil(W/slice)`` slices.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from gswarm.core.sketches import frames
from gswarm.core.sketches.cms import CountMinSketch
from gswarm.core.sketches.hashing import SMALL
from gswarm.core.sketches.hll import HyperLogLog
from gswarm.core.sketches.topk import TopK


@dataclass
class Slice:
    """The sketches of one slice of event time."""

    freq: CountMinSketch
    traders: HyperLogLog
    top: TopK


@dataclass
class WindowRing:
    """A ring of ``slots`` slices of ``slice_ms`` each."""

    slice_ms: int = 300_000
    slots: int = 12
    cms_width: int = 272
    cms_depth: int = 5
    hll_p: int = 11
    top_capacity: int = 32
    newest: int = -1
    late: int = 0
    slices: dict[int, Slice] = field(default_factory=dict)

    @property
    def span_ms(self) -> int:
        return self.slice_ms * self.slots

    def _new_slice(self) -> Slice:
        return Slice(CountMinSketch(self.cms_width, self.cms_depth), HyperLogLog(self.hll_p),
                     TopK(self.top_capacity))

    def update(self, ts: NDArray[np.int64], markets: list[str], market_hashes: NDArray[np.uint64],
               trader_hashes: NDArray[np.uint64]) -> None:
        """Add ticks (in stream order) to the slices of their event times."""
        if len(ts) == 0:
            return
        if len(ts) <= SMALL:
            # a few ticks: the same slices, grouped in plain Python (numpy's fixed cost per
            # call would be most of the work)
            few = [t // self.slice_ms for t in ts.tolist()]
            newest = self.newest
            for s in few:  # late: older than the ring as it was when the tick came
                newest = max(newest, s)
                self.late += s <= newest - self.slots
            low = self._advance(max(few))
            groups: dict[int, list[int]] = {}
            for pos, s in enumerate(few):
                if s >= low:
                    groups.setdefault(s, []).append(pos)
            self._add(groups.items(), markets, market_hashes, trader_hashes)
            return
        idx = ts // self.slice_ms
        seen = np.maximum.accumulate(np.maximum(idx, self.newest))
        self.late += int((idx <= seen - self.slots).sum())
        low = self._advance(int(idx.max()))
        keep = idx >= low
        self._add(((s, np.flatnonzero(idx == s)) for s in np.unique(idx[keep]).tolist()),
                  markets, market_hashes, trader_hashes)

    def _advance(self, newest: int) -> int:
        """Move the ring to ``newest`` (if newer); return the oldest slice it keeps."""
        self.newest = max(self.newest, newest)
        low = self.newest - self.slots + 1
        for s in [s for s in self.slices if s < low]:
            del self.slices[s]
        return low

    def _add(self, groups: Iterable[tuple[int, Any]], markets: list[str],
             market_hashes: NDArray[np.uint64], trader_hashes: NDArray[np.uint64]) -> None:
        """Add each slice's ticks (positions into the batch, in stream order) to it."""
        for s, mask in groups:
            sl = self.slices.get(s) or self.slices.setdefault(s, self._new_slice())
            runs = sl.freq.update(market_hashes[mask])
            sl.top.offer_many((markets[mask[pos]], est) for pos, est in runs)
            sl.traders.update(trader_hashes[mask])

    def merged(self, window_ms: int) -> tuple[CountMinSketch, HyperLogLog, set[str]]:
        """Sketches of the newest ``ceil(window_ms / slice_ms)`` slices, merged."""
        if not 0 < window_ms <= self.span_ms:
            raise ValueError(f"window must be in (0, {self.span_ms}] ms, got {window_ms}")
        count = math.ceil(window_ms / self.slice_ms)
        freq, traders = CountMinSketch(self.cms_width, self.cms_depth), HyperLogLog(self.hll_p)
        candidates: set[str] = set()
        for s, sl in self.slices.items():
            if s > self.newest - count:
                freq.merge(sl.freq)
                traders.merge(sl.traders)
                candidates |= sl.top.candidates.keys()
        return freq, traders, candidates

    def merge(self, other: WindowRing) -> None:
        """In place: the union of two rings of the same shape, aligned on the newer one."""
        if self._shape() != other._shape():
            raise ValueError("cannot merge window rings of different shapes")
        for s, sl in other.slices.items():
            mine = self.slices.setdefault(s, self._new_slice())
            mine.freq.merge(sl.freq)
            mine.traders.merge(sl.traders)
            for key, est in sl.top.candidates.items():
                mine.top.offer(key, est)
        self.newest = max(self.newest, other.newest)
        self.late += other.late
        for s in [s for s in self.slices if s <= self.newest - self.slots]:
            del self.slices[s]

    def _shape(self) -> tuple[int, ...]:
        return (self.slice_ms, self.slots, self.cms_width, self.cms_depth, self.hll_p,
                self.top_capacity)

    def to_bytes(self) -> bytes:
        head = orjson.dumps({"shape": self._shape(), "newest": self.newest, "late": self.late,
                             "slices": sorted(self.slices)})
        parts = [head]
        for s in sorted(self.slices):
            sl = self.slices[s]
            parts += [sl.freq.to_bytes(), sl.traders.to_bytes(), sl.top.to_bytes()]
        return frames.pack(parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> WindowRing:
        blobs = frames.unpack(data)
        head = orjson.loads(blobs[0])
        slice_ms, slots, width, depth, p, cap = head["shape"]
        ring = cls(slice_ms, slots, width, depth, p, cap, head["newest"], head["late"])
        for i, s in enumerate(head["slices"]):
            f, t, k = blobs[1 + 3 * i: 4 + 3 * i]
            ring.slices[s] = Slice(CountMinSketch.from_bytes(f), HyperLogLog.from_bytes(t),
                                   TopK.from_bytes(k))
        return ring

