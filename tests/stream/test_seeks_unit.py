"""Fetches and seeks kept apart (gswarm.stream.delivery.Seeks).

Faust resumes a rebalance's partitions before it seeks them to the committed offsets, so
a fetch from the old positions could be delivered after the seek (the rebalance skip of
issue 15, gap 2). These tests pin the ordering the run delivery relies on.
"""

from __future__ import annotations

import asyncio

import pytest
from faust.types import TP

from gswarm.stream.delivery import RunConsumer, Seeks, SeekTimeout
from tests.stream.offline import offline_app

A, B = TP("ticks", 0), TP("ticks", 1)


async def test_a_seek_waits_for_the_fetch_in_flight_and_makes_its_records_stale() -> None:
    seeks = Seeks()
    order: list[str] = []

    async def seek() -> None:
        async with seeks.seeking((A,)):
            order.append("seek")

    async with seeks.fetching() as fence:
        task = asyncio.create_task(seek())
        await asyncio.sleep(0.01)
        order.append("fetch returned")
    await task
    assert order == ["fetch returned", "seek"]
    assert seeks.since(fence, A)  # A's records come again from where the seek put it
    assert not seeks.since(fence, B)  # B was not sought: its records are delivered


async def test_no_fetch_starts_while_a_seek_runs() -> None:
    seeks = Seeks()
    order: list[str] = []
    release = asyncio.Event()

    async def seek_to_committed() -> None:
        async with seeks.seeking((A, B)):
            await release.wait()
            order.append("seek done")

    async def fetch() -> None:
        async with seeks.fetching() as fence:
            order.append("fetch")
        assert not seeks.since(fence, A) and not seeks.since(fence, B)

    seek_task = asyncio.create_task(seek_to_committed())
    await asyncio.sleep(0)
    fetch_task = asyncio.create_task(fetch())
    await asyncio.sleep(0.01)
    assert order == []  # the fetch waits for the seek
    release.set()
    await asyncio.gather(seek_task, fetch_task)
    assert order == ["seek done", "fetch"]


async def test_a_seek_of_several_partitions_makes_their_runs_stale() -> None:
    seeks = Seeks()
    async with seeks.fetching() as fence:
        pass
    async with seeks.seeking((A, B)):
        assert seeks.since(fence, A) and seeks.since(fence, B)
    assert seeks.since(fence, A) and seeks.since(fence, B)
    async with seeks.fetching() as later:
        pass
    assert not seeks.since(later, A)


async def test_a_seek_under_way_makes_only_its_partitions_stale() -> None:
    """A seek counts when it begins (before the fetch in flight returns and before it
    moves anything): what was fetched of its partitions is delivered by nobody and comes
    again from where it goes; other partitions' records are delivered."""
    seeks = Seeks()
    async with seeks.fetching() as fence:
        pass
    async with seeks.seeking((B,)):
        assert seeks.since(fence, B) and not seeks.since(fence, A)
    assert seeks.since(fence, B) and not seeks.since(fence, A)


async def test_a_seek_that_cannot_finish_crashes_the_worker_instead_of_hanging_it() -> None:
    """Faust's recovery waits ``broker_request_timeout`` for its seek and then ends
    without a word, leaving a worker that never consumes (the chaos soak's hung cold
    recovery); the seek gives up first and crashes the worker, so it is restarted."""
    app = offline_app("seek-limit-unit", broker_request_timeout=0.5)
    consumer = app.consumer
    assert isinstance(consumer, RunConsumer)
    consumer.assignment = lambda: {A}  # type: ignore[method-assign]  # nothing is started
    async with consumer._seeks.fetching():  # a fetch in flight that does not return
        with pytest.raises(SeekTimeout):
            await asyncio.wait_for(consumer.seek_to_committed(), 5.0)
    assert isinstance(app.crash_reason, SeekTimeout)
