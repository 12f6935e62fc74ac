"""Lag: a ring of recent latencies with percentiles, and messages behind per partition."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


class LagRing:
    """Event-time lag of the last ``size`` facts: now (when queryable) minus the tick's ts.

    With ticks stamped at produce time (the benchmark) this is produce -> queryable
    latency; with real feeds it is how far the store trails the markets.
    """

    def __init__(self, size: int = 1 << 18) -> None:
        self.values = np.zeros(size, dtype=np.float32)
        self.count = 0  # facts recorded in all (the ring holds the last ``size``)

    def add(self, lags_ms: np.ndarray[Any, Any]) -> None:
        """Record lags (ms); only the newest ``size`` are kept."""
        size, added = len(self.values), len(lags_ms)
        lags_ms = lags_ms[-size:]
        start = self.count % size
        first = min(len(lags_ms), size - start)
        self.values[start:start + first] = lags_ms[:first]
        self.values[:len(lags_ms) - first] = lags_ms[first:]
        self.count += added

    def summary(self) -> dict[str, float | int | None]:
        """p50, p99 and max of the held lags (ms), and how many were recorded in all."""
        held = self.values[:min(self.count, len(self.values))]
        if not len(held):
            return {"p50": None, "p99": None, "max": None, "count": 0}
        p50, p99 = np.percentile(held, [50, 99]).tolist()
        return {"p50": round(p50, 1), "p99": round(p99, 1),
                "max": round(float(held.max()), 1), "count": self.count}

    def reset(self) -> None:
        self.count = 0


def behind(
    ends: Mapping[int, int], last_seen: Mapping[int, int], committed: Mapping[int, int | None],
) -> dict[int, int]:
    """Messages each partition's worker still has to process: end offset - next to process.

    The next offset to process is one past the last offset the worker handled, or, before
    it handled any on that partition, the group's committed offset (0 without one). The
    fetch position is not used: fetched is not processed (a worker a minute behind under
    back-pressure had fetched almost everything).
    """
    out = {}
    for partition, end in ends.items():
        last = last_seen.get(partition)
        nxt = last + 1 if last is not None else committed.get(partition) or 0
        out[partition] = max(end - nxt, 0)
    return out
