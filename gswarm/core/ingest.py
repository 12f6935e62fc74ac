"""One market's share of a batch: new ticks + previous record -> new record + segment.

Pure Python and numpy. The stream agent groups a batch by market and calls
:func:`apply_ticks` once per market; the result is one changelog message per market per
batch (the segment, which carries the new market record).

Exactly-once effect on at-least-once delivery: the record keeps the highest source offset
it applied (a market lives on one partition, so its offsets only grow) and the bet ids of
its last ``alpha.WINDOW`` ticks. A redelivered message (offset already applied) and a
duplicate bet (an id seen recently, e.g. from a restarted feed) change nothing, so alpha
vectors after a crash equal those of a run without one.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from gswarm.core import alpha
from gswarm.core.facts import Segment, seq_for
from gswarm.core.ticks import Tick

_U32 = struct.Struct("<I")
RECORD_VERSION = 1


@dataclass
class MarketRecord:
    """Everything Gswarm keeps about a market besides its datoms."""

    market: str
    latest: dict[str, Any] = field(default_factory=dict)
    last_offset: int = -1
    recent: list[str | None] = field(default_factory=list)  # bet ids of the last ticks
    n: int = 0
    rolling: alpha.RollingState = field(default_factory=alpha.RollingState.empty)

    def encode(self) -> bytes:
        doc = orjson.dumps({
            "market": self.market, "latest": self.latest, "last_offset": self.last_offset,
            "recent": self.recent, "n": self.n,
        })
        rolling: bytes = self.rolling.to_bytes()
        return bytes((RECORD_VERSION,)) + _U32.pack(len(doc)) + doc + rolling

    @classmethod
    def decode(cls, data: bytes) -> MarketRecord:
        if not data or data[0] != RECORD_VERSION:
            raise ValueError(f"unknown market record format {data[:1]!r}")
        (n,) = _U32.unpack_from(data, 1)
        doc = orjson.loads(data[5: 5 + n])
        return cls(
            market=doc["market"], latest=doc["latest"], last_offset=doc["last_offset"],
            recent=doc["recent"], n=doc["n"],
            rolling=alpha.RollingState.from_bytes(data[5 + n:]),
        )


@dataclass(frozen=True)
class Arrival:
    """A tick with its origin: partition offset and index in the message."""

    offset: int
    index: int
    tick: Tick


@dataclass(frozen=True)
class Applied:
    """The outcome of :func:`apply_ticks` for one market."""

    record: MarketRecord
    segment: Segment | None  # the new ticks; None if there were none
    skipped: int  # arrivals already applied (redelivered) or duplicate bets
    counted: list[Arrival]  # arrivals that are not duplicate bets: new or redelivered


def apply_ticks(
    record: MarketRecord | None, market: str, arrivals: Sequence[Arrival]
) -> Applied:
    """Apply a market's arrivals (in partition order) to its record.

    ``counted`` lists the arrivals other stateful consumers (the sketches, which keep their
    own last offset) must see: redelivered ticks are in it, duplicate bets are not.
    """
    rec = record if record is not None else MarketRecord(market)
    seen = {i for i in rec.recent if i is not None}
    fresh: list[tuple[int, Arrival]] = []
    counted: list[Arrival] = []
    for a in arrivals:
        bet = a.tick.id
        if a.offset <= rec.last_offset:
            counted.append(a)
            continue
        if bet is not None and bet in seen:
            continue
        counted.append(a)
        if bet is not None:
            seen.add(bet)
        fresh.append((seq_for(a.offset, a.index), a))
    skipped = len(arrivals) - len(fresh)
    if not fresh:
        return Applied(rec, None, skipped, counted)

    ticks = [a.tick for _, a in fresh]
    ts = np.fromiter((t.ts for t in ticks), dtype=np.int64, count=len(ticks))
    seqs = np.fromiter((s for s, _ in fresh), dtype=np.uint64, count=len(ticks))
    prob = np.fromiter((t.prob for t in ticks), dtype=np.float64, count=len(ticks))
    vol = np.fromiter((t.volume for t in ticks), dtype=np.float64, count=len(ticks))
    rolling, raw = alpha.update(rec.rolling, ts, prob, vol)
    unit = alpha.embed(raw)

    new = MarketRecord(
        market=market,
        latest=_latest(rec.latest, fresh, raw),
        last_offset=max(rec.last_offset, max(a.offset for _, a in fresh)),
        recent=(rec.recent + [t.id for t in ticks])[-alpha.WINDOW:],
        n=rec.n + len(fresh),
        rolling=rolling,
    )
    segment = Segment(
        market=market, ts=ts, seq=seqs, prob=prob, volume=vol,
        trader=[t.trader for t in ticks], outcome=[t.outcome for t in ticks],
        alpha=unit, record=new.encode(),
    )
    return Applied(new, segment, skipped, counted)


def _latest(
    previous: dict[str, Any], fresh: list[tuple[int, Arrival]], raw: np.ndarray[Any, Any]
) -> dict[str, Any]:
    """The latest tick by event time, then arrival: a late tick never replaces a newer one."""
    # alpha is the market's current vector: the one after the last tick applied.
    current = dict(zip(alpha.COMPONENTS, raw[-1].tolist(), strict=True))
    best = max(range(len(fresh)), key=lambda i: (fresh[i][1].tick.ts, fresh[i][0]))
    seq, arrival = fresh[best]
    t = arrival.tick
    if previous and (previous["ts"], previous["seq"]) >= (t.ts, seq):
        return {**previous, "alpha": current}
    return {
        "market": t.market, "prob": t.prob, "ts": t.ts, "seq": seq, "volume": t.volume,
        "trader": t.trader, "outcome": t.outcome, "source": t.source, "id": t.id,
        "alpha": current,
    }
