"""The order in which one fetch's runs go to the agents (gswarm.stream.delivery)."""

from __future__ import annotations

from dataclasses import dataclass

from faust.types import TP

from gswarm.stream.delivery import runs_in_order


@dataclass
class Record:
    offset: int
    timestamp: int | None


def run(first_ts: int | None, offset: int = 0, n: int = 3) -> list[Record]:
    return [Record(offset + i, None if first_ts is None else first_ts + i) for i in range(n)]


def test_within_a_topic_the_run_waiting_longest_goes_first() -> None:
    """After a rebalance one fetch brings every partition's backlog: the partitions taken
    over from a dead worker hold ticks from before its death, older than the survivor's
    own backlog, and are processed first."""
    fetched = {
        TP("ticks", 0): run(5_000),  # the survivor's own: read until the rebalance
        TP("ticks", 1): run(1_000),  # taken over: waiting since the dead one's commit
        TP("ticks", 2): run(5_000),
        TP("ticks", 3): run(3_000),
    }
    order = runs_in_order(fetched)
    assert [tp.partition for tp, _ in order] == [1, 3, 0, 2]  # ties keep the fetch's order
    for tp, records in order:  # each partition's own order untouched
        assert records == fetched[tp]


def test_topics_still_take_turns_and_runs_without_timestamps_come_last() -> None:
    fetched = {
        TP("ticks", 0): run(9_000),
        TP("ticks", 1): run(None),
        TP("ticks", 2): run(2_000),
        TP("control", 0): run(8_000),
        TP("control", 1): run(7_000),
        TP("empty", 0): [],
    }
    assert [(tp.topic, tp.partition) for tp, _ in runs_in_order(fetched)] == [
        ("ticks", 2), ("control", 1), ("ticks", 0), ("control", 0), ("ticks", 1)]
    assert all(isinstance(tp, TP) for tp, _ in runs_in_order(fetched))
