"""The delivery ceiling: a Faust app whose agent does nothing with the ticks it receives.

Run as ``faust -A bench.ceiling_app worker``: it is configured exactly like the Gswarm app
(:func:`gswarm.stream.app.make_app`, so the same transport, buffers and commit settings),
subscribes to the tick topic with raw bytes, and counts. What it reaches is the ceiling for
anything built on Faust's delivery path on this machine; ``bench/ceiling.py`` runs it beside
a bare aiokafka drain.

``GSWARM_CEILING_DELIVERY`` chooses the path: ``runs`` (default, what Gswarm uses: a
:class:`~gswarm.stream.delivery.RunTopic`, one event per run of a partition's messages) or
``messages`` (Faust's own path: an ordinary topic, one event per message,
``take_events``).

``GSWARM_CEILING_DELAY_S`` makes the agent sleep that long after each batch (a slow agent:
its buffer fills and back-pressure pauses and resumes fetching; tests use it).

``GET /api/ceiling`` answers with what it saw: messages, ticks (an array message counts its
elements, found without decoding JSON), first/last arrival time and process CPU, and per
partition the count, first and last offset and the number of offsets that arrived out of
order or twice. With ``GSWARM_CEILING_LOG=PATH`` it also appends every
``partition offset`` it processed to PATH (tests check exactly-once delivery with it).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from typing import IO, Any

import faust

from gswarm.config import Settings
from gswarm.stream.app import make_app
from gswarm.stream.delivery import RunTopic, run_records

settings = Settings.from_env()
app = make_app(settings)
DELIVERY = os.environ.get("GSWARM_CEILING_DELIVERY", "runs")
#: the topic read (default: the settings' tick topic), so runs with their own app ids
#: (consumer groups) can read the same backlog
TOPIC = os.environ.get("GSWARM_CEILING_TOPIC") or settings.tick_topic
if DELIVERY not in ("runs", "messages"):
    raise SystemExit(f"GSWARM_CEILING_DELIVERY={DELIVERY!r}: expected runs or messages")
tick_topic: Any
if DELIVERY == "runs":
    tick_topic = RunTopic(app, topics=[TOPIC],
                          maxsize=2 * settings.batch_runs_or_partitions)
else:
    tick_topic = app.topic(TOPIC, key_type=bytes, value_type=bytes,
                           key_serializer="raw", value_serializer="raw")


class Seen:
    """What the agent processed."""

    def __init__(self, log_path: str | None) -> None:
        self.messages = 0
        self.ticks = 0
        self.first_time: float | None = None
        self.last_time: float | None = None
        self.first_cpu: float | None = None
        self.last_cpu: float | None = None
        self.partitions: dict[int, dict[str, int]] = {}
        self.log: IO[str] | None = open(log_path, "a") if log_path else None  # noqa: SIM115

    def add(self, batch: Sequence[tuple[int, int, bytes | None]]) -> None:
        """Count a batch of (partition, offset, value)."""
        if self.first_time is None:
            self.first_time, self.first_cpu = time.time(), time.process_time()
        ticks = 0
        parts = self.partitions
        for partition, offset, value in batch:
            ticks += value.count(b'"market"') if value else 0
            p = parts.get(partition)
            if p is None:
                parts[partition] = {"count": 1, "first": offset, "last": offset,
                                    "disorder": 0}
                continue
            p["count"] += 1
            if offset <= p["last"]:
                p["disorder"] += 1
            else:
                p["last"] = offset
        self.messages += len(batch)
        self.ticks += ticks
        self.last_time, self.last_cpu = time.time(), time.process_time()
        if self.log is not None:
            self.log.write("".join(f"{p} {o}\n" for p, o, _ in batch))
            self.log.flush()

    def snapshot(self) -> dict[str, Any]:
        return {"messages": self.messages, "ticks": self.ticks,
                "first_time": self.first_time, "last_time": self.last_time,
                "first_cpu": self.first_cpu, "last_cpu": self.last_cpu,
                "partitions": {str(p): v for p, v in sorted(self.partitions.items())},
                "pid": os.getpid()}


seen = Seen(os.environ.get("GSWARM_CEILING_LOG"))
DELAY_S = float(os.environ.get("GSWARM_CEILING_DELAY_S") or 0)


@app.agent(tick_topic)
async def noop(stream: Any) -> None:
    """Take batches of events and do nothing with them but count."""
    if DELIVERY == "runs":
        async for events in stream.take_events(settings.batch_runs_or_partitions,
                                               settings.batch_within_s):
            seen.add([(r.partition, r.offset, r.value)
                      for e in events for r in run_records(e)])
            if DELAY_S:
                await asyncio.sleep(DELAY_S)
    else:
        async for events in stream.take_events(4000, settings.batch_within_s):
            seen.add([(e.message.partition, e.message.offset, e.message.value)
                      for e in events])


@app.page("/api/ceiling")
async def ceiling(web: Any, request: Any) -> Any:
    return web.json(seen.snapshot())


@app.page("/api/health")
async def health(web: Any, request: Any) -> Any:
    assigned = app.consumer.assignment() if app.rebalancing is False else set()
    return web.json({"status": "ok", "partitions": sorted(
        tp.partition for tp in assigned if tp.topic == TOPIC)})


__all__ = ["app", "faust"]
