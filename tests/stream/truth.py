"""Offline ground truth: the same core code applied to the produced ticks, no Kafka."""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gswarm.core import alpha
from gswarm.core.ingest import Arrival, MarketRecord, apply_ticks
from gswarm.core.ticks import parse_tick


@dataclass
class Truth:
    records: dict[str, MarketRecord] = field(default_factory=dict)
    # market -> sorted [(ts, seq, prob, alpha_unit)]
    history: dict[str, list[tuple[int, int, float, list[float]]]] = field(
        default_factory=lambda: defaultdict(list)
    )

    def series(self, market: str) -> list[tuple[int, float]]:
        """(ts, prob) in time order; equal times in arrival (produce) order."""
        return [(ts, p) for ts, _, p, _ in sorted(self.history[market])]

    def asof(self, market: str, t: int) -> float | None:
        rows = sorted(self.history[market])
        i = bisect.bisect_right([ts for ts, _, _, _ in rows], t)
        return rows[i - 1][2] if i else None


def ground_truth(ticks: Iterable[dict[str, Any]]) -> Truth:
    """Apply ticks one message at a time, in produce order (= partition order per market).

    The offset given to the core is the tick's position in the list, which, like the real
    partition offset, grows per market: txs differ from the worker's but sort the same.
    """
    truth = Truth()
    for offset, doc in enumerate(ticks):
        tick = parse_tick(doc)
        rec = truth.records.get(tick.market)
        applied = apply_ticks(rec, tick.market, [Arrival(offset, 0, tick)])
        truth.records[tick.market] = applied.record
        seg = applied.segment
        if seg is not None:
            truth.history[tick.market].append(
                (tick.ts, offset, tick.prob, seg.alpha[0].tolist())
            )
    return truth


def unit_alpha(rec: MarketRecord) -> np.ndarray[Any, Any]:
    raw = np.array([[rec.latest["alpha"][c] for c in alpha.COMPONENTS]])
    vec: np.ndarray[Any, Any] = alpha.embed(raw)[0].astype(np.float64)
    return vec
