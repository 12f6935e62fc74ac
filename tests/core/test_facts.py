"""Key layout: byte order is EAVT order; segments round-trip; seq derives from the event."""

from __future__ import annotations

import struct

import numpy as np

from gswarm.core.facts import (
    TICK_ATTRIBUTES,
    Segment,
    attr_prefix,
    fact_key,
    holders,
    pieces,
    plan_prune,
    segment_key,
    seq_for,
    split_fact_key,
)


def test_byte_order_is_entity_attribute_time_order() -> None:
    keys = [
        fact_key(m, a, ts, seq)
        for m in ("m-1", "m-10", "m-2")
        for a in (1, 5)
        for ts, seq in ((5, 1), (1_000, 0), (2**40, 7), (2**40, 8))
    ]
    expected = sorted(keys, key=lambda k: (split_fact_key(k)[0].encode(), *split_fact_key(k)[1:]))
    assert sorted(keys) == expected
    # one market's history of one attribute is one contiguous range
    inside = [k for k in sorted(keys) if k.startswith(attr_prefix("m-1", 1))]
    assert [split_fact_key(k)[0] for k in inside] == ["m-1"] * 4


def test_seq_is_event_derived_and_in_arrival_order() -> None:
    assert seq_for(5, 2) == (5 << 16) | 2
    assert seq_for(5, 2) < seq_for(5, 3) < seq_for(6, 0)


def test_segment_round_trip_and_datoms() -> None:
    n, dim = 3, 21
    seg = Segment(
        market="m-1", ts=np.array([3, 1, 2], dtype=np.int64),
        seq=np.array([1, 2, 3], dtype=np.uint64), prob=np.array([0.1, 0.2, 0.3]),
        volume=np.array([1.0, 0.0, 2.5]), trader=["a", "b", "c"], outcome=["YES", "NO", "YES"],
        alpha=np.arange(n * dim, dtype=np.float32).reshape(n, dim), record=b"\x01rec",
    )
    back = Segment.decode(seg.encode())
    assert back.market == "m-1" and back.record == b"\x01rec"
    for name in ("ts", "seq", "prob", "volume", "alpha"):
        assert np.array_equal(getattr(back, name), getattr(seg, name))
    assert back.trader == seg.trader and back.outcome == seg.outcome
    datoms = seg.datoms()
    assert len(datoms) == n * len(TICK_ATTRIBUTES)
    assert len({k for k, _ in datoms}) == len(datoms)


def test_datoms_hold_each_ticks_values_under_its_eavt_key() -> None:
    """The whole-segment packing gives, for every tick, the key and bytes of packing its
    own values (big-endian time and seq in the key; little-endian float64 and float32)."""
    rng = np.random.default_rng(3)
    n, dim = 9, 20
    seg = Segment(
        market="m-é", ts=rng.integers(1, 2**62, n).astype(np.int64),
        seq=rng.integers(0, 2**63, n).astype(np.uint64),
        prob=np.append(rng.random(n - 1), np.nan), volume=rng.random(n) * 1e9,
        trader=[f"t{i}" for i in range(n)], outcome=["YES", "NO", "é"] * 3,
        alpha=rng.random((n, dim)).astype(np.float32), record=b"r",
    )
    want = []
    for i in range(n):
        ts, seq = int(seg.ts[i]), int(seg.seq[i])
        for name, value in (
                ("tick/probability", struct.pack("<d", seg.prob[i])),
                ("tick/volume", struct.pack("<d", seg.volume[i])),
                ("tick/trader", seg.trader[i].encode()),
                ("tick/outcome", seg.outcome[i].encode()),
                ("market/alpha", b"".join(struct.pack("<f", x) for x in seg.alpha[i]))):
            want.append((fact_key("m-é", TICK_ATTRIBUTES[name], ts, seq), value))
    assert seg.datoms() == want


def test_holders_picks_the_one_segment_that_can_hold_each_seq() -> None:
    # a market's segments start at seqs 10, 20 and 35 (keys sort by time, not seq)
    keys = [segment_key("m", 900, 20), segment_key("m", 100, 35), segment_key("m", 500, 10)]
    found = holders(keys, [10, 12, 20, 34, 99, 3])
    assert found == {segment_key("m", 500, 10): [10, 12], segment_key("m", 900, 20): [20, 34],
                     segment_key("m", 100, 35): [99]}  # 3: before every segment, none
    assert holders([], [1]) == {}


def test_plan_prune_keeps_each_markets_newest_segment() -> None:
    keys = sorted([
        segment_key("a", 1_000, 1), segment_key("a", 50_000, 2), segment_key("a", 99_000, 3),
        segment_key("b", 2_000, 4),  # old, but b's newest: kept
        segment_key("c", 10_000, 5), segment_key("c", 100_000, 6),
    ])
    doomed = plan_prune(keys, retention_ms=60_000)  # newest 100 000 -> cutoff 40 000
    assert sorted(doomed) == sorted([segment_key("a", 1_000, 1), segment_key("c", 10_000, 5)])
    assert plan_prune([], 1000) == []


def test_pieces_keep_every_tick_in_order_and_only_the_last_the_record() -> None:
    n, dim = 7, 3
    seg = Segment(
        market="m", ts=np.arange(n, dtype=np.int64), seq=np.arange(n, dtype=np.uint64) + 10,
        prob=np.linspace(0, 1, n), volume=np.ones(n), trader=[f"u{i}" for i in range(n)],
        outcome=["YES"] * n, alpha=np.ones((n, dim), dtype=np.float32), record=b"rec",
    )
    parts = pieces(seg, most=3)
    assert [len(p.ts) for p in parts] == [3, 3, 1]
    assert [d for p in parts for d in p.datoms()] == seg.datoms()
    assert [p.record for p in parts] == [b"", b"", b"rec"]  # the others claim no tick
    assert [p.key for p in parts] == [segment_key("m", 0, 10), segment_key("m", 3, 13),
                                      segment_key("m", 6, 16)]
    assert pieces(seg, most=7) == [seg]
