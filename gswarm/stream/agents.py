"""The ingest agent: batches of runs of tick messages, flushed at ``batch_runs`` runs or
after ``batch_within_s`` (see gswarm/stream/delivery.py for runs)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, cast

from faust.sensors import Sensor
from faust.types import TP

from gswarm.core.lag import behind
from gswarm.core.signals import RuleSet, load_rules
from gswarm.stream.app import app, settings
from gswarm.stream.delivery import RunConsumer, before_commit
from gswarm.stream.memory import trimmer
from gswarm.stream.pipeline import Ingest, control_message, counters
from gswarm.stream.tables import (
    SKETCH_KEY,
    deadletter_topic,
    facts,
    signals_topic,
    sketches,
    tick_topic,
)

log = logging.getLogger(__name__)

#: A bad rules file stops the worker here, at start (file, line and reason).
rules = load_rules(settings.signals_rules_path) if settings.signals_rules_path else RuleSet()
ingest = Ingest(
    facts, sketches, SKETCH_KEY, deadletter_topic, settings.partitions,
    settings.max_message_bytes, signals_topic, rules,
)


before_commit(app, ingest.sketches.persist)


async def rewind(partition: int, offset: int) -> None:
    """Seek a tick partition back (see :meth:`Ingest.in_order`)."""
    try:
        await app.consumer.seek(TP(settings.tick_topic, partition), offset)
    except Exception as exc:  # no longer assigned: its next owner starts at the commit
        log.warning("partition %d: could not seek back to %d: %s", partition, offset, exc)


ingest.rewind = rewind


@app.agent(tick_topic)
async def ingest_ticks(stream: Any) -> None:
    """Validate, group by market, and write one segment per market per batch."""
    runs = settings.batch_runs_or_partitions
    async for events in stream.take_events(runs, settings.batch_within_s):
        await ingest.handle(events)


@app.on_partitions_assigned.connect
async def forget_partitions_elsewhere(sender: Any, /, *args: Any, signal: Any = None,
                                      **kwargs: Any) -> None:
    """Offsets of tick partitions this worker no longer holds move on without it."""
    assigned = args[0] if args else kwargs.get("assigned", ())
    owned = {tp.partition for tp in assigned if tp.topic == settings.tick_topic}
    ingest.rebalances.assigned(owned)
    ingest.offsets.keep(owned)
    ingest.sketches.forget()
    ingest.vectors.forget()


@app.on_partitions_revoked.connect
async def drop_vectors(sender: Any, /, *args: Any, signal: Any = None, **kwargs: Any) -> None:
    """Revoked partitions' vectors go at once (every index is rebuilt after the assignment)."""
    ingest.rebalances.revoked()
    ingest.vectors.forget()


class RebalanceStart(Sensor):
    """Faust calls a sensor's ``on_rebalance_start`` as soon as the consumer learns that a
    rebalance began: the first moment of the timeline in /api/cluster
    (:mod:`gswarm.core.rebalances`)."""

    def on_rebalance_start(self, app: Any) -> dict[str, Any]:
        ingest.rebalances.began()  # called in the consumer's thread: only a timestamp
        return {}


app.sensors.add(RebalanceStart())


@app.on_rebalance_complete.connect
async def note_recovered(sender: Any, /, *args: Any, signal: Any = None,
                         **kwargs: Any) -> None:
    """Tables are up to date after the rebalance: ingest resumes."""
    ingest.rebalances.recovered()


@app.timer(interval=settings.prune_interval_s, on_leader=True)  # type: ignore[untyped-decorator]
async def schedule_prune() -> None:
    """Leader duty: ask every partition to prune, in order with its ticks."""
    value, headers = control_message("prune", retention_ms=int(settings.retention_s * 1000))
    for partition in range(settings.partitions):
        await tick_topic.send(value=value, headers=headers, partition=partition)
    counters.prune_schedules += 1
    log.debug("pruner: asked %d partitions to drop facts older than %.0fs of event time",
             settings.partitions, settings.retention_s)


@app.timer(interval=1.0)  # type: ignore[untyped-decorator]
async def measure_lag() -> None:
    """Messages behind per tick partition: end offsets (asked of the broker) minus the next
    offset to process; shown by /api/cluster, /api/stats, /metrics and the dashboard."""
    tps = [tp for tp in app.assignor.assigned_actives() if tp.topic == settings.tick_topic]
    if not tps:
        counters.behind = {}
        return
    try:
        ends = await app.consumer.highwaters(*tps)
    except Exception as exc:  # broker unreachable for a moment: keep the last figures
        log.debug("lag: end offsets unavailable: %s", exc)
        return
    committed = cast(RunConsumer, app.consumer).committed(tps)
    counters.behind = behind(
        {tp.partition: end for tp, end in ends.items()}, ingest.offsets.last,
        {tp.partition: offset for tp, offset in committed.items()},
    )


_role = {"leader": False}


@app.timer(interval=1.0)  # type: ignore[untyped-decorator]
async def watch_role() -> None:
    """Log when this worker becomes, or stops being, the leader (cluster-wide duties)."""
    leader = app.is_leader()
    if leader != _role["leader"]:
        _role["leader"] = leader
        log.info("role: %s", "LEADER (runs the pruner schedule)" if leader else "follower")


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


_release = trimmer() if settings.memory_trim_s > 0 else None
if _release is not None:
    release = _release

    @app.timer(interval=settings.memory_trim_s)  # type: ignore[untyped-decorator]
    async def trim_memory() -> None:
        """Give the heap's free memory back to the OS (gswarm.stream.memory), from a
        thread: the event loop goes on meanwhile."""
        await asyncio.get_running_loop().run_in_executor(None, release)
