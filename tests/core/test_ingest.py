"""One market's share of a batch: redeliveries and duplicates change nothing."""

from __future__ import annotations

import numpy as np

from gswarm.core.facts import Segment, pieces
from gswarm.core.ingest import Applied, Arrival, MarketRecord, apply_ticks
from gswarm.core.ticks import Tick


def astuple(a: Applied) -> tuple:  # type: ignore[type-arg]
    return a.record, a.segment, a.skipped, a.counted


def tick(ts: int, prob: float, bet: str | None = None) -> Tick:
    return Tick("m", prob, ts, 1.0, "u", "test", "YES", bet)


def test_redelivered_offsets_are_skipped() -> None:
    arrivals = [Arrival(i, 0, tick(1000 + i, 0.5 + i / 100)) for i in range(10)]
    rec, seg, skipped, _ = astuple(apply_ticks(None, "m", arrivals[:6]))
    assert seg is not None and skipped == 0 and rec.last_offset == 5
    # offsets 3..9 delivered again after a crash: 3..5 are already applied
    rec2, seg2, skipped2, counted = astuple(apply_ticks(rec, "m", arrivals[3:]))
    assert counted == arrivals[3:]  # redelivered ticks still reach the sketches
    assert skipped2 == 3 and seg2 is not None and len(seg2.ts) == 4
    whole, seg_whole, _, _ = astuple(apply_ticks(None, "m", arrivals))
    assert rec2.latest == whole.latest and rec2.n == whole.n == 10
    assert rec2.rolling.to_bytes() == whole.rolling.to_bytes()
    assert seg_whole is not None
    assert np.array_equal(seg2.alpha, seg_whole.alpha[6:])


def test_duplicate_bets_collapse_and_late_ticks_do_not_replace_latest() -> None:
    rec = apply_ticks(None, "m", [Arrival(0, 0, tick(3000, 0.3, "b3"))]).record
    rec, seg, skipped, counted = astuple(apply_ticks(rec, "m", [
        Arrival(1, 0, tick(1000, 0.1, "b1")),  # late
        Arrival(2, 0, tick(3000, 0.3, "b3")),  # same bet again
    ]))
    assert skipped == 1 and seg is not None and list(seg.ts) == [1000]
    assert [a.offset for a in counted] == [1]  # the duplicate bet is not counted
    assert (rec.latest["ts"], rec.latest["prob"], rec.n) == (3000, 0.3, 2)
    # nothing new at all: no segment, nothing to write
    _, none, skipped, _ = astuple(apply_ticks(rec, "m", [Arrival(2, 0, tick(3000, 0.3, "b3"))]))
    assert none is None and skipped == 1


def test_record_round_trip() -> None:
    rec = apply_ticks(None, "m", [Arrival(i, 0, tick(i + 1, 0.4)) for i in range(250)]).record
    back = MarketRecord.decode(rec.encode())
    assert back.encode() == rec.encode()
    assert len(back.recent) == 200


def test_duplicate_bets_within_one_batch_collapse_for_few_and_many_arrivals() -> None:
    rec = apply_ticks(None, "m", [Arrival(0, 0, tick(1000, 0.1, "b0"))]).record
    few = apply_ticks(rec, "m", [Arrival(1, 0, tick(2000, 0.2, "b1")),
                                 Arrival(2, 0, tick(2000, 0.2, "b1"))])
    many = apply_ticks(rec, "m", [Arrival(1, 0, tick(2000, 0.2, "b1")),
                                  Arrival(2, 0, tick(2000, 0.2, "b1")),
                                  Arrival(3, 0, tick(1000, 0.1, "b0")),
                                  Arrival(4, 0, tick(3000, 0.3, None)),
                                  Arrival(5, 0, tick(3000, 0.3, None))])
    assert few.skipped == 1 and few.record.n == 2
    assert many.skipped == 2 and many.record.n == 4  # ticks without an id always count
    assert [a.offset for a in many.counted] == [1, 4, 5]


def test_a_changelog_holding_only_the_first_piece_of_a_large_batch_loses_no_tick() -> None:
    """A worker killed after the first piece of a large segment reached the changelog and
    before the rest did: a worker recovering from that changelog applies the batch again
    (its offsets were never committed) and ends with the facts and record of a calm run."""
    before = apply_ticks(None, "m", [Arrival(0, 0, tick(500, 0.5))])
    batch = [Arrival(1 + i, 0, tick(1000 + i, 0.2 + (i % 7) / 10)) for i in range(8)]
    calm = apply_ticks(before.record, "m", batch)
    assert before.segment is not None and calm.segment is not None
    parts = pieces(calm.segment, most=3)
    survived: list[Segment] = [before.segment, parts[0]]
    # a recovery takes the last record it reads
    record = MarketRecord.decode([s.record for s in survived if s.record][-1])
    again = apply_ticks(record, "m", batch)  # the batch is delivered again
    assert again.segment is not None and again.skipped == 0
    redone = pieces(again.segment, most=3)
    assert redone[0].key == parts[0].key and redone[0].encode() == parts[0].encode()
    recovered = {k: v for s in survived + redone for k, v in s.datoms()}
    assert recovered == {k: v for s in [before.segment, *parts] for k, v in s.datoms()}
    assert again.record.encode() == calm.record.encode()
