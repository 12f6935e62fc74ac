"""Adaptive batches (gswarm/stream/batching.py): handed over when nothing more is waiting.

Faust's ``take_events(max_, within)`` holds a lone event until ``within`` has passed;
``take_ready`` hands it over at once, coalesces what is already queued, and never puts
more than ``max_`` events in a batch. Shown with Faust's agent test context (the stream
class comes from the App setting ``Stream``); the agent on the real broker is covered by
the end-to-end delivery and ingest tests, which run through ``take_ready``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import faust

from gswarm.stream import batching
from gswarm.stream.app import app as gswarm_app

WITHIN_S = 30.0  # far longer than any test waits: a batch must not wait for it


def _app(batches: list[list[bytes]], max_: int) -> tuple[faust.App, Any]:
    app = faust.App("gswarm-batching-test", broker="kafka://127.0.0.1:1", store="memory://",
                    Stream="gswarm.stream.batching:Stream")
    topic = app.topic("ticks", key_type=bytes, value_type=bytes, value_serializer="raw")

    @app.agent(topic)
    async def take(stream: Any) -> Any:
        async for events in stream.take_ready(max_, WITHIN_S):
            batches.append([e.value for e in events])
            yield len(events)

    return app, take


def test_gswarm_app_uses_the_adaptive_stream() -> None:
    assert gswarm_app.conf.Stream is batching.Stream


async def test_a_lone_event_is_handed_over_without_waiting() -> None:
    batches: list[list[bytes]] = []
    _, take = _app(batches, 8)
    async with take.test_context() as agent:
        await asyncio.wait_for(agent.put(b"one"), 5.0)
        await asyncio.wait_for(agent.put(b"two"), 5.0)
    assert batches == [[b"one"], [b"two"]]


async def test_queued_events_are_coalesced_up_to_max_in_order() -> None:
    batches: list[list[bytes]] = []
    _, take = _app(batches, 3)
    values = [str(i).encode() for i in range(10)]
    async with take.test_context() as agent:
        for value in values:
            await agent.put(value, wait=False)
        async with asyncio.timeout(5.0):
            while sum(map(len, batches)) < len(values):
                await asyncio.sleep(0.01)
    assert [v for batch in batches for v in batch] == values
    assert all(1 <= len(batch) <= 3 for batch in batches)
    assert len(batches) < len(values)  # queued events went together
