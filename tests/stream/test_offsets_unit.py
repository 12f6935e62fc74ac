"""Which offset a commit may reach: never past an offset no one acked (issue 15, gap 2).

A unit test of the consumer's offset bookkeeping (no broker needed: nothing is started);
the end-to-end guards are the kill -9 and rebalance tests and the chaos soak, which check
``offsets_skipped`` and compare every partition's state with a calm run.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from faust.types import TP

from gswarm.stream.delivery import RunConsumer
from tests.stream.offline import offline_app

TP0 = TP("ticks", 0)


@pytest.fixture
def consumer() -> Iterator[RunConsumer]:
    app = offline_app("offsets-unit")
    consumer = app.consumer
    assert isinstance(consumer, RunConsumer)
    yield consumer


def acked(consumer: RunConsumer, committed: int | None, offsets: list[int]) -> int | None:
    consumer._committed_offset[TP0] = committed
    consumer._acked[TP0] = list(offsets)
    consumer._acked_index[TP0] = set(offsets)
    return consumer._new_offset(TP0)


def test_contiguous_acks_from_the_committed_offset_commit(consumer: RunConsumer) -> None:
    assert acked(consumer, 10, [10, 11, 12]) == 13
    assert acked(consumer, None, [0, 1]) == 2  # no commit yet: as Faust


def test_a_hole_of_one_at_the_head_is_not_committed_over(consumer: RunConsumer) -> None:
    # offset 10 (a run of one the stream skipped in a rebalance) was never processed:
    # Faust's own check lets 11-12 commit to 13, and 10 is never delivered again
    assert acked(consumer, 10, [11, 12]) is None
    assert acked(consumer, 0, [3, 4]) is None  # committed 0: Faust does not check at all


def test_offsets_known_never_there_still_count(consumer: RunConsumer) -> None:
    consumer._gap[TP0].addi(10, 11)  # offset 10 is a gap (compaction, a marker)
    assert acked(consumer, 10, [11, 12]) == 13
