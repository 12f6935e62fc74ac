"""The ingest agent: batches of tick events, flushed at ``batch_max`` or ``batch_within_s``."""

from __future__ import annotations

import logging
import time
from typing import Any

from gswarm.stream.app import app, settings
from gswarm.stream.pipeline import Ingest, counters
from gswarm.stream.tables import SKETCH_KEY, deadletter_topic, facts, sketches, tick_topic

log = logging.getLogger(__name__)

ingest = Ingest(
    facts, sketches, SKETCH_KEY, deadletter_topic, settings.partitions,
    settings.max_message_bytes,
)


@app.agent(tick_topic)
async def ingest_ticks(stream: Any) -> None:
    """Validate, group by market, and write one segment per market per batch."""
    async for events in stream.take_events(settings.batch_max, settings.batch_within_s):
        await ingest.handle(events)


_last = {"t": time.monotonic(), "ticks": 0}


@app.timer(interval=10.0)  # type: ignore[untyped-decorator]
async def log_throughput() -> None:
    """A log line with throughput, so a user sees ticks flowing."""
    now = time.monotonic()
    rate = (counters.ticks - _last["ticks"]) / max(now - _last["t"], 1e-9)
    _last.update(t=now, ticks=counters.ticks)
    log.info(
        "ingest: %d ticks as facts (%.0f/s), %d messages, %d dead letters, %d duplicates",
        counters.ticks, rate, counters.messages, sum(counters.dead_letters.values()),
        counters.duplicates,
    )
