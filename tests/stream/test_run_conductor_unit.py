"""A run waiting for room in a full channel when a rebalance clears it (gswarm.stream.delivery).

Faust's flow control clears the agents' queues when partitions are revoked, and clearing
cancels the puts waiting on a full queue. Faust's fetcher took that cancellation for its
own and died (``'NoneType' object has no attribute 'wakeup'``), which the chaos soak hit
(the worker stopped and was restarted). The run is now dropped, unacked, and comes again
from the committed offset. No broker: nothing is started.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, cast

from faust.types import TP

from gswarm.stream.delivery import RunConductor, RunTopic
from tests.stream.offline import offline_app

TP0 = TP("ticks", 0)


@dataclass
class Record:
    offset: int
    timestamp: int = 0
    timestamp_type: int = 0


async def full_channel() -> tuple[RunConductor, Any]:
    app = offline_app("conductor-unit")
    conductor = app.topics
    assert isinstance(conductor, RunConductor)
    channel = RunTopic(app, topics=["ticks"], maxsize=1).clone(is_iterator=True)  # agent's
    conductor._tp_index[TP0].add(cast(Any, channel))
    assert await conductor.on_run(TP0, [Record(0)], 1)  # room for one: delivered
    assert channel.queue.full()
    return conductor, channel


async def test_a_run_waiting_on_a_cleared_channel_is_dropped_not_crashed() -> None:
    conductor, channel = await full_channel()
    waiting = asyncio.ensure_future(conductor.on_run(TP0, [Record(1)], 1))
    await asyncio.sleep(0.01)
    assert not waiting.done()  # back-pressure: waits for room
    channel.queue.clear()  # the rebalance's flow_control.clear()
    assert await waiting is False  # dropped: the partition's seek brings it again
    assert channel.queue.empty()


async def test_a_cancelled_delivery_is_still_cancelled() -> None:
    conductor, _ = await full_channel()
    waiting = asyncio.ensure_future(conductor.on_run(TP0, [Record(1)], 1))
    await asyncio.sleep(0.01)
    waiting.cancel()  # the flow suspended, or the worker stopping
    try:
        await waiting
    except asyncio.CancelledError:
        return
    raise AssertionError("on_run swallowed its own cancellation")
