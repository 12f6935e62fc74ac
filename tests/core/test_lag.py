import numpy as np

from gswarm.core.lag import LagRing


def test_empty_ring_has_no_percentiles() -> None:
    assert LagRing(8).summary() == {"p50": None, "p99": None, "max": None, "count": 0}


def test_summary_over_values_added_in_pieces() -> None:
    ring = LagRing(1000)
    values = np.arange(1, 101, dtype=np.float64)
    for piece in np.array_split(values, 7):
        ring.add(piece)
    s = ring.summary()
    assert s["count"] == 100
    assert s["max"] == 100.0
    assert s["p50"] == 50.5
    assert s["p99"] is not None and 99.0 <= s["p99"] <= 100.0


def test_ring_keeps_only_the_most_recent_values_across_wraparound() -> None:
    ring = LagRing(10)
    ring.add(np.full(7, 1000.0))  # old, large lags
    ring.add(np.arange(1, 9, dtype=np.float64))  # wraps: 3 at the end, 5 at the start
    ring.add(np.array([9.0, 10.0]))
    s = ring.summary()
    assert s["count"] == 17
    assert sorted(ring.values.tolist()) == list(range(1, 11))
    assert s["max"] == 10.0


def test_a_batch_larger_than_the_ring_keeps_its_tail() -> None:
    ring = LagRing(4)
    ring.add(np.arange(10, dtype=np.float64))
    assert sorted(ring.values.tolist()) == [6.0, 7.0, 8.0, 9.0]
    assert ring.summary()["count"] == 10


def test_reset_forgets_everything() -> None:
    ring = LagRing(4)
    ring.add(np.ones(3))
    ring.reset()
    assert ring.summary()["count"] == 0
