"""A run that starts past an offset never delivered is not processed: the partition is
sought back to it (the rebalance skip of issue 15, gap 2, turned from a loss into a
redelivery). A unit test of :meth:`Ingest.in_order` on real runs; the end-to-end guards
are the chaos soak and the kill -9 and rebalance tests."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from faust.types import TP

from gswarm.core.offsets import OffsetWatch
from gswarm.stream.delivery import MessageRun
from gswarm.stream.pipeline import REWIND_PATIENCE_S, Ingest


def run(partition: int, first: int, last: int) -> Any:
    records = [SimpleNamespace(offset=o, timestamp=None, timestamp_type=0)
               for o in range(first, last + 1)]
    message = MessageRun(TP("ticks", partition), records, generation_id=1)
    message.handed = True  # the stream handed it to the agent
    return SimpleNamespace(message=message, value=records)


NOW = [100.0]


def ingest(last: dict[int, int]) -> tuple[Ingest, list[tuple[int, int]]]:
    sought: list[tuple[int, int]] = []
    ing = Ingest.__new__(Ingest)  # only the offset bookkeeping is exercised
    ing.offsets = OffsetWatch(dict(last))
    ing.rewound = {}
    ing.clock = lambda: NOW[0]

    async def rewind(partition: int, offset: int) -> None:
        sought.append((partition, offset))

    ing.rewind = rewind
    return ing, sought


def test_runs_continuing_their_partition_are_kept_in_order() -> None:
    ing, sought = ingest({0: 9})
    events = [run(0, 10, 19), run(1, 0, 4), run(0, 20, 29), run(0, 15, 25)]  # 15: redelivery
    assert asyncio.run(ing.in_order(events)) == events
    assert sought == [] and all(e.message.handed for e in events)


def test_a_run_past_an_undelivered_offset_is_refused_and_its_partition_sought_back() -> None:
    ing, sought = ingest({0: 9, 1: 4})
    gap, later, other = run(0, 15, 19), run(0, 20, 24), run(1, 5, 9)
    kept = asyncio.run(ing.in_order([gap, later, other]))
    assert kept == [other]
    assert not gap.message.handed and not later.message.handed  # not acked: they come again
    assert sought == [(0, 10)]
    # runs fetched before the seek still arrive: refused again, no second seek
    assert asyncio.run(ing.in_order([run(0, 25, 29)])) == [] and sought == [(0, 10)]
    # the redelivery from offset 10 is processed
    again = run(0, 10, 19)
    assert asyncio.run(ing.in_order([again])) == [again]


def test_an_offset_that_never_comes_back_is_skipped_after_one_seek() -> None:
    ing, sought = ingest({0: 9})
    assert asyncio.run(ing.in_order([run(0, 15, 19)])) == []
    # the topic's retention deleted 10-14: after the seek the runs still start at 15
    NOW[0] += REWIND_PATIENCE_S / 2
    assert asyncio.run(ing.in_order([run(0, 15, 19)])) == []  # maybe fetched before it
    NOW[0] += REWIND_PATIENCE_S
    later = run(0, 15, 19)
    assert asyncio.run(ing.in_order([later])) == [later] and sought == [(0, 10)]
