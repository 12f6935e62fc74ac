"""The ingest step for one batch of tick-topic events: decode, dead-letter, group, write.

Kept apart from the agent so it stays thin: the agent hands a batch here, this module calls
the pure core (:mod:`gswarm.core.ticks`, :mod:`gswarm.core.ingest`) and writes one segment
per market into the facts table, under an event of that market's partition (a Faust table
may only be changed under an event of the partition that owns the key).
"""

from __future__ import annotations

import contextlib
import logging
import time
import weakref
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import faust.streams
import numpy as np
import orjson
from aiokafka.partitioner import murmur2
from faust.types import EventT

from gswarm.core.facts import (
    META_ATTRIBUTES,
    Segment,
    fact_key,
    holders,
    market_key,
    pieces,
    plan_prune_seeking,
    segment_prefix,
    seq_for,
    signal_key,
)
from gswarm.core.ingest import Applied, Arrival, MarketRecord, apply_batch
from gswarm.core.lag import LagRing
from gswarm.core.meta import CONTROL_OP as META_OP
from gswarm.core.meta import MarketMeta, meta_datoms, parse_meta
from gswarm.core.offsets import OffsetWatch
from gswarm.core.rebalances import Rebalances
from gswarm.core.signals import RuleSet, Signal, resolved_signals
from gswarm.core.sketches.hashing import hash_ids
from gswarm.core.sketches.state import CountedTick, PartitionSketches
from gswarm.core.ticks import CONTROL_HEADER, Rejected, decode
from gswarm.errors import TickError
from gswarm.store.queries import last_datom
from gswarm.stream.delivery import MessageRun, run_records
from gswarm.stream.vectors import VectorCache

log = logging.getLogger(__name__)

#: Facts-table key of the offset of the partition's last prune request (not a datom, a
#: segment or a market record: see :mod:`gswarm.core.facts` for their keys).
PRUNED = b"P"
#: Key, in the partition's database only (never on the changelog), of the partition's last
#: prune: its request offset and the segment keys it deleted (:meth:`Pipeline.prune`).
PRUNE_LOG = b"p"


@dataclass
class Counters:
    """Per-process counters (also exported as metrics)."""

    messages: int = 0
    items: int = 0  # ticks offered: one per single-tick message, one per array element
    ticks: int = 0  # ticks turned into facts (first time applied)
    duplicates: int = 0  # ticks skipped as redeliveries or duplicate bets
    resent: int = 0  # stored ticks sent to the changelog again after a redelivery
    ticks_by_partition: Counter[int] = field(default_factory=Counter)
    ticks_by_source: Counter[str] = field(default_factory=Counter)
    batch_messages_sum: int = 0  # sum of batch sizes (with batches: a summary)
    flush_ms_sum: float = 0.0
    offsets_skipped: int = 0  # tick-topic offsets jumped over (never seen): should stay 0
    rewinds: int = 0  # partitions sought back after a run started past an unseen offset
    controls: int = 0  # control messages applied (not counted in messages)
    meta_datoms: int = 0  # market metadata values written (changes only)
    prune_schedules: int = 0  # prune rounds this worker sent as the leader
    prunes: int = 0
    pruned_segments: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)
    signals: Counter[str] = field(default_factory=Counter)  # signals fired, by rule
    signals_resent: int = 0  # stored signals sent again after a redelivery
    batches: int = 0
    batch_markets: int = 0  # sum over batches of the distinct markets in the batch
    segments: int = 0
    last_batch_size: int = 0
    last_flush_ms: float = 0.0
    first_fact_time: float | None = None  # wall clock (s) of the first batch with new facts
    last_fact_time: float | None = None  # ... and of the last, once written (queryable)
    first_fact_cpu: float | None = None  # process CPU seconds at those moments
    last_fact_cpu: float | None = None
    lag: LagRing = field(default_factory=LagRing)  # now - tick event time, when queryable
    arrival_lag: LagRing = field(default_factory=LagRing)  # now - Kafka record time, same
    behind: dict[int, int] = field(default_factory=dict)  # per partition (agents.measure_lag)
    started: float = field(default_factory=time.time)

    def snapshot(self) -> dict[str, Any]:
        return {
            "messages": self.messages, "items": self.items, "ticks": self.ticks,
            "duplicates": self.duplicates, "resent": self.resent,
            "ticks_by_partition": {str(p): n for p, n in self.ticks_by_partition.items()},
            "ticks_by_source": dict(self.ticks_by_source),
            "controls": self.controls, "meta_datoms": self.meta_datoms,
            "prunes": self.prunes,
            "prune_schedules": self.prune_schedules,
            "pruned_segments": self.pruned_segments,
            "dead_letters": dict(self.dead_letters),
            "dead_letters_total": sum(self.dead_letters.values()),
            "signals": dict(self.signals), "signals_total": sum(self.signals.values()),
            "signals_resent": self.signals_resent,
            "batches": self.batches, "batch_markets": self.batch_markets,
            "segments": self.segments,
            "last_batch_size": self.last_batch_size, "last_flush_ms": self.last_flush_ms,
            "flush_ms_sum": round(self.flush_ms_sum, 1),
            "offsets_skipped": self.offsets_skipped, "rewinds": self.rewinds,
            "first_fact_time": self.first_fact_time, "last_fact_time": self.last_fact_time,
            "first_fact_cpu": self.first_fact_cpu, "last_fact_cpu": self.last_fact_cpu,
            "event_lag_ms": self.lag.summary(),
            "arrival_lag_ms": self.arrival_lag.summary(),
            "behind": {str(p): n for p, n in sorted(self.behind.items())},
            "behind_total": sum(self.behind.values()),
            "uptime_s": time.time() - self.started,
        }


counters = Counters()


@contextlib.contextmanager
def under_event(event: EventT[Any]) -> Iterator[None]:
    """Make ``event`` the current event, so table writes go to its partition.

    A batch from ``take_events`` mixes partitions; Faust addresses a table write (store
    database and changelog partition) by the *current* event, so each market's write is made
    under one of that market's own events.
    """
    token = faust.streams._current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        faust.streams._current_event.reset(token)


class Partitioning:
    """Checks that a message sits on the partition its key hashes to (murmur2)."""

    def __init__(self) -> None:
        self._cache: dict[tuple[bytes, int], int] = {}

    def expected(self, key: bytes, partitions: int) -> int:
        hit = self._cache.get((key, partitions))
        if hit is None:
            if len(self._cache) > 500_000:
                self._cache.clear()
            hit = self._cache[(key, partitions)] = (murmur2(key) & 0x7FFFFFFF) % partitions
        return hit


def control_of(msg: Any) -> dict[str, Any] | None:
    """The control document of a message carrying the ``gswarm-control`` header, else None."""
    headers = msg.headers
    if not headers:
        return None
    items = headers.items() if isinstance(headers, Mapping) else headers
    for name, value in items:
        if name == CONTROL_HEADER:
            try:
                doc = orjson.loads(msg.value or b"{}")
            except orjson.JSONDecodeError:
                doc = {}
            return {"op": value.decode(errors="replace"), **doc} if isinstance(
                doc, dict) else {"op": "invalid"}
    return None


def control_message(op: str, **fields: Any) -> tuple[bytes, dict[str, bytes]]:
    """(value, headers) of a control message."""
    return orjson.dumps(fields), {CONTROL_HEADER: op.encode()}


class SketchCache:
    """Per-partition sketches, kept in memory and written to their table before a commit.

    Writing the whole state (~90 KB per partition: two HLLs, a CMS, top-k, windows) after
    every batch cost most of a light batch and its changelog. It is written once per
    commit instead (:func:`~gswarm.stream.delivery.before_commit`), with the last offset
    it applied: the committed offsets never pass what the stored sketch covers, so after a
    crash the messages after it come again and are counted once (the sketch skips offsets
    it has applied). Queries read the live state.
    """

    def __init__(self, table: Any, key: bytes) -> None:
        self.table = table
        self.key = key
        self.live: dict[int, PartitionSketches] = {}
        self.dirty: dict[int, EventT[Any]] = {}  # partition -> an event to write under

    def state(self, partition: int) -> PartitionSketches:
        """The partition's current sketches (read from its table on first use)."""
        state = self.live.get(partition)
        if state is None:
            raw = self.table.data._db_for_partition(partition).get(self.key)
            state = PartitionSketches.from_bytes(raw) if raw is not None else (
                PartitionSketches())
            self.live[partition] = state
        return state

    def apply(self, event: EventT[Any], ticks: list[CountedTick]) -> None:
        partition = event.message.partition
        self.state(partition).apply(ticks)
        # Written even when nothing new was counted but ticks were redelivered: the local
        # value may be ahead of the changelog after a crash, and this re-sends it.
        self.dirty[partition] = event

    def persist(self) -> None:
        """Write every changed partition's sketches to the table (before a commit)."""
        dirty, self.dirty = self.dirty, {}
        for partition, event in dirty.items():
            raw = self.live[partition].to_bytes()
            with under_event(event):
                self.table[self.key] = raw

    def forget(self) -> None:
        """A new assignment: read each partition again from its (recovered) table.

        The revoke before it committed, so nothing unwritten is lost; what was not
        committed comes again and is applied again.
        """
        self.live.clear()
        self.dirty.clear()


#: Seconds a partition sought back (see :meth:`Ingest.in_order`) waits for the offset it
#: was sought to before the next run is taken as it is (the offset is gone from the topic).
REWIND_PATIENCE_S = 5.0


class Ingest:
    """Processes batches of tick events for one worker."""

    def __init__(
        self, facts: Any, sketches: Any, sketch_key: bytes, deadletter_topic: Any,
        partitions: int, max_message_bytes: int, signals_topic: Any = None,
        rules: RuleSet | None = None,
    ) -> None:
        self.facts = facts
        self.signals_topic = signals_topic
        self.rules = rules if rules is not None else RuleSet()
        self.outbox: list[tuple[int, Signal]] = []  # (partition, signal) to send
        self.sketches = SketchCache(sketches, sketch_key)
        self.vectors = VectorCache(facts)
        self.deadletters = deadletter_topic
        self.partitions = partitions
        self.max_bytes = max_message_bytes
        self.partitioning = Partitioning()
        self.fresh_ts: list[np.ndarray[Any, Any]] = []  # event times of this batch's new facts
        self.stamps: list[int] = []  # Kafka record times (ms) of this batch's messages
        self.offsets = OffsetWatch()
        self.rebalances = Rebalances()
        #: partition -> (offset, when) it was sought back to after a run skipped past it
        self.rewound: dict[int, tuple[int, float]] = {}
        self.clock: Callable[[], float] = time.monotonic
        #: seeks a tick partition back to an offset (the agent wires the consumer's seek)
        self.rewind: Callable[[int, int], Awaitable[None]] | None = None
        self.fresh_partitions: set[int] = set()  # partitions with new facts in this batch

    async def handle(self, events: Sequence[EventT[Any]]) -> None:
        """One batch: events of a :class:`~gswarm.stream.delivery.RunTopic` (runs of records).

        Its facts-table changes reach the producer at its end, even if it fails midway
        (:meth:`~gswarm.stream.tables.FactTable.flush_changelog`), before the batch's
        runs are acked.
        """
        try:
            await self._handle(events)
        finally:
            await self.facts.flush_changelog()

    async def _handle(self, events: Sequence[EventT[Any]]) -> None:
        started = time.perf_counter()
        began = (time.time(), time.process_time())
        groups: dict[str, list[Arrival]] = defaultdict(list)
        owner: dict[str, EventT[Any]] = {}
        partition_event: dict[int, EventT[Any]] = {}
        messages = 0
        stamps = self.stamps
        events = await self.in_order(events)
        for event, msg in ((e, m) for e in events for m in run_records(e)):
            messages += 1
            if msg.timestamp is not None:
                stamps.append(msg.timestamp)
            skip = self.offsets.see(msg.partition, msg.offset)
            if skip is not None:
                counters.offsets_skipped += skip.count
                log.warning("partition %d: offsets %d-%d were never delivered to this worker "
                            "(%d messages skipped)", skip.partition, skip.first, skip.last,
                            skip.count)
            control = control_of(msg)
            if control is not None:
                await self.control(event, msg, control)
                continue
            counters.messages += 1
            misplaced = self.misplaced(msg.partition, msg.key)
            if misplaced is not None:
                counters.items += 1
                await self.dead_letter(msg, misplaced)
                continue
            good, bad = decode(msg.value, msg.key, self.max_bytes)
            counters.items += len(good) + len(bad)
            for rejected in bad:
                await self.dead_letter(msg, rejected)
            for index, tick in good:
                groups[tick.market].append(Arrival(msg.offset, index, tick))
                owner[tick.market] = event
                partition_event[msg.partition] = event
        counted: dict[int, list[CountedTick]] = defaultdict(list)
        with self.facts.data.batched():
            for market, event, arrivals in self.write_markets(groups, owner):
                counted[event.message.partition] += [
                    CountedTick(a.offset, a.index, market, a.tick.trader, a.tick.ts)
                    for a in arrivals
                ]
        for partition, ticks in counted.items():
            self.sketches.apply(partition_event[partition], ticks)
        self.facts_written(began)
        counters.batches += 1
        counters.batch_markets += len(groups)
        counters.last_batch_size = messages
        counters.last_flush_ms = (time.perf_counter() - started) * 1000
        counters.batch_messages_sum += messages
        counters.flush_ms_sum += counters.last_flush_ms
        # last: the batch's counters are whole before this yields to the event loop (the
        # web server reads them in between)
        await self.send_signals()

    async def in_order(self, events: Sequence[EventT[Any]]) -> list[EventT[Any]]:
        """The batch's runs that continue their partition from the last offset seen.

        Offsets of the tick topic are contiguous, so a run that starts past the next offset
        this worker expects on its partition was handed over messages nobody delivered
        (the rebalance skip: a fetch from a kept partition's old position delivered after
        the rebalance's seek; the run delivery now keeps fetches and seeks apart,
        :class:`gswarm.stream.delivery.Seeks`, and this check stays as the backstop).
        Processing it would apply later ticks without the
        earlier ones, and the earlier ones, arriving later, would count as redelivered: a
        loss. Such a run, and the partition's later runs in the batch, are not processed
        and not acked (``handed`` false, see :meth:`RunConsumer.ack_run`); the partition is
        sought back to the expected offset and they come again, in order (runs fetched
        before the seek are refused too). If that offset still has not come
        :data:`REWIND_PATIENCE_S` after the seek (the topic's retention deleted it), the
        next run is processed and the skip counted, as before.
        """
        expected = {p: last + 1 for p, last in self.offsets.last.items()}
        refused: dict[int, int] = {}
        keep = []
        now = self.clock()
        for event in events:
            message, records = event.message, run_records(event)
            p = message.partition
            if not isinstance(message, MessageRun) or not records:
                keep.append(event)
                continue
            want = expected.get(p)
            sought = self.rewound.get(p)
            gave_up = (sought is not None and sought[0] == want
                       and now - sought[1] > REWIND_PATIENCE_S)
            if p in refused:  # a later run of a partition already refused
                message.handed = False
                continue
            if want is not None and records[0].offset > want and not gave_up:
                message.handed = False
                refused[p] = want
                continue
            self.rewound.pop(p, None)
            expected[p] = records[-1].offset + 1
            keep.append(event)
        for p, offset in refused.items():
            sought = self.rewound.get(p)
            if sought is not None and sought[0] == offset:
                continue  # already sought back: the refused runs were fetched before that
            self.rewound[p] = (offset, now)
            counters.rewinds += 1
            log.warning("partition %d: a run started past offset %d, which was never "
                        "delivered; seeking back to it (nothing processed out of order)",
                        p, offset)
            if self.rewind is not None:
                await self.rewind(p, offset)
        return keep

    def misplaced(self, partition: int, key: bytes | None) -> Rejected | None:
        """A ``wrong_partition`` rejection if ``key`` does not hash to ``partition``."""
        if key is None:
            return None
        expected = self.partitioning.expected(key, self.partitions)
        if partition == expected:
            return None
        return Rejected("wrong_partition", f"on partition {partition}, key hashes to {expected}")

    def write_markets(
        self, groups: dict[str, list[Arrival]], owner: dict[str, EventT[Any]],
    ) -> Iterator[tuple[str, EventT[Any], list[Arrival]]]:
        """Write each market's new ticks as one segment; yield the arrivals to sketch."""
        work = []
        for market, arrivals in groups.items():
            raw = self.facts.data.db(owner[market].message.partition).get(market_key(market))
            work.append((market, MarketRecord.decode(raw) if raw is not None else None,
                         arrivals))
        # partition -> (markets, their new raw alpha vectors), for the in-memory index
        changed: dict[int, tuple[list[str], list[np.ndarray[Any, Any]]]] = defaultdict(
            lambda: ([], []))
        for (market, record, arrivals), applied in zip(
                work, apply_batch(work, self.rules), strict=True):
            event = owner[market]
            counted = self.write_market(event, market, record, arrivals, applied)
            if applied.current is not None:
                ids, rows = changed[event.message.partition]
                ids.append(market)
                rows.append(applied.current)
            yield market, event, counted
        for partition, (ids, rows) in changed.items():
            self.vectors.upsert(partition, ids, rows)

    def write_market(
        self, event: EventT[Any], market: str, record: MarketRecord | None,
        arrivals: list[Arrival], applied: Applied,
    ) -> list[Arrival]:
        """Write one market's segment (and resend stored ticks that were redelivered);
        return the arrivals the sketches count."""
        partition = event.message.partition
        counters.duplicates += applied.skipped
        segment = applied.segment
        for sig in applied.signals:
            counters.signals[sig["rule"]] += 1
            self.outbox.append((partition, sig))
        last = record.last_offset if record else -1
        if segment is not None:
            self.fresh_ts.append(segment.ts)
            counters.ticks += len(segment.ts)
            counters.ticks_by_partition[partition] += len(segment.ts)
            self.fresh_partitions.add(partition)
            for a in arrivals:
                if a.offset > last:
                    counters.ticks_by_source[a.tick.source] += 1
        counted = applied.counted
        redelivered = [a for a in arrivals if a.offset <= last]
        if redelivered:
            stored = self.resend(event, market, redelivered, applied)
            counted = [a for a in counted if a.offset > last
                       or seq_for(a.offset, a.index) in stored]
        for piece in pieces(segment) if segment is not None else ():
            encoded = piece.encode()
            self.facts.data.expect(encoded, piece)
            with under_event(event):
                self.facts[piece.key] = encoded
            counters.segments += 1
        return counted

    def resend(self, event: EventT[Any], market: str, redelivered: list[Arrival],
               applied: Applied) -> set[int]:
        """Send again the stored segments that hold redelivered ticks; return the seqs of
        the redelivered ticks the sketches count.

        After a crash the local store may hold segments whose changelog messages never
        reached Kafka. Each is sent again exactly as stored (same key, same ticks, and the
        market record it was written with), oldest first, before the batch's new segment:
        a tick stays in the one segment that holds it, so a prune of that segment deletes
        exactly its datoms, here and in a recovery from the changelog. A redelivered tick
        found in its segment was a fact, so it was counted; one not found was a duplicate
        bet the first time (not counted), or sits in a segment pruned since (see
        :func:`unstored_counted`).

        The record a message carries must claim no tick the changelog does not hold up to
        it: a recovery takes the last record it reads, and counts every tick up to that
        record's last offset as applied. Resent with the market's *current* record (as
        before), the first resends of a batch claimed the ticks of its new segment, still
        queued behind them; a worker that died with only those resends sent left a
        changelog from which its successor skipped those ticks as redelivered (the chaos
        soak lost 29 ticks of one market so). A stored segment's own record claims only
        up to its last tick, and every older tick is in an older segment, resent before
        it or already in the changelog (committed offsets wait for the changelog's acks).
        """
        partition = event.message.partition
        db = self.facts.data.db(partition)
        wanted = {seq_for(a.offset, a.index) for a in redelivered}
        found = holders(self.facts.data.segment_keys(partition, segment_prefix(market)),
                        wanted)
        stored: set[int] = set()
        duplicates: set[int] = set()
        for key in sorted(found, key=lambda k: found[k][0]):
            raw = db.get(key)
            if raw is None:
                continue
            held = Segment.decode(raw)
            stored |= wanted.intersection(held.seq.tolist())
            # the signals redelivered ticks fired may never have reached the topic: send
            # them again (same ids; consumers dedupe by id)
            again_signals = [g for g in held.signals if g["seq"] in wanted]
            counters.signals_resent += len(again_signals)
            self.outbox += [(partition, g) for g in again_signals]
            # not stored, yet inside the segment's span: skipped as a duplicate bet then
            first, last_seq = int(held.seq[0]), int(held.seq[-1])
            duplicates.update(q for q in found[key] if first < q < last_seq)
            self.facts.data.expect(raw, held)
            with under_event(event):
                self.facts[key] = raw
            counters.resent += len(held.ts)
        pruned = db.get(PRUNED)
        since = int.from_bytes(pruned, "big", signed=True) if pruned is not None else -1
        unsure = [a for a in redelivered if a.offset < since
                  and seq_for(a.offset, a.index) not in stored | duplicates]
        # with no prune after it, a tick in no segment was a duplicate bet
        return stored | unstored_counted(unsure, applied.record)


    async def control(self, event: EventT[Any], msg: Any, control: dict[str, Any]) -> None:
        """A control message, applied in order with the partition's ticks.

        ``prune`` comes from the leader; ``market`` (metadata) from a live feed. A bad
        metadata message is dead-lettered like a bad tick.
        """
        counters.controls += 1
        op = control.pop("op", None)
        if op == "prune":
            self.prune(event, msg.offset, int(control["retention_ms"]))
        elif op == META_OP:
            try:
                meta = parse_meta(control, msg.key)
            except TickError as exc:
                await self.dead_letter(msg, Rejected(exc.reason, exc.detail))
                return
            misplaced = self.misplaced(msg.partition, meta.market.encode())
            if misplaced is not None:
                await self.dead_letter(msg, misplaced)
                return
            self.write_meta(event, msg.offset, meta)
        else:
            log.warning("ignoring unknown control message %r", {"op": op, **control})

    def write_meta(self, event: EventT[Any], offset: int, meta: MarketMeta) -> None:
        """Write the metadata values that changed as datoms (changelogged as themselves)."""
        db = self.facts.data.db(event.message.partition)

        def current(code: int) -> bytes | None:
            found = last_datom(db, meta.market, code)
            return found[1] if found is not None else None

        datoms = meta_datoms(meta, seq_for(offset, 0), current)
        with under_event(event):
            for key, value in datoms:
                self.facts[key] = value
            self.resolved(event, offset, meta, {key for key, _ in datoms}, db)
        counters.meta_datoms += len(datoms)

    def resolved(self, event: EventT[Any], offset: int, meta: MarketMeta, written: set[bytes],
                 db: Any) -> None:
        """``resolved`` rules: a signal when this message wrote the market's resolution.

        Stored as its own key (changelogged with the datoms); a redelivered message writes
        nothing new, so its stored signal is sent again instead (same id).
        """
        if "market/resolution" not in meta.values or not self.rules:
            return
        seq = seq_for(offset, 0)
        fired = resolved_signals(self.rules.resolved_for(meta.market), meta.market,
                                 meta.values["market/resolution"], meta.ts, seq)
        new = fact_key(meta.market, META_ATTRIBUTES["market/resolution"], meta.ts, seq) in (
            written)
        for sig in fired:
            key = signal_key(meta.market, meta.ts, seq, sig["rule"])
            if new:
                self.facts[key] = orjson.dumps(sig)
                counters.signals[sig["rule"]] += 1
            elif db.get(key) is None:
                continue
            else:
                counters.signals_resent += 1
            self.outbox.append((event.message.partition, sig))

    async def send_signals(self) -> None:
        """Send the batch's signals to the signals topic, keyed by market, on the market's
        partition; like dead letters they go through the app's producer, whose buffer is
        drained before offsets are committed."""
        outbox, self.outbox = self.outbox, []
        if self.signals_topic is None:
            return
        questions: dict[str, Any] = {}
        for partition, sig in outbox:
            market = sig["market"]
            if market not in questions:
                questions[market] = self.question(partition, market)
            doc = {**sig, "question": questions[market]}
            await self.signals_topic.send(key=market.encode(), value=orjson.dumps(doc),
                                          partition=partition)

    def question(self, partition: int, market: str) -> str | None:
        """The market's question, if a live feed sent it."""
        found = last_datom(self.facts.data.db(partition), market,
                           META_ATTRIBUTES["market/question"])
        if found is None:
            return None
        value = orjson.loads(found[1])
        return value if isinstance(value, str) else None

    def prune(self, event: EventT[Any], offset: int, retention_ms: int) -> None:
        """Delete the partition's segments (and datoms) older than the retention window.

        The offset of the prune request is kept (key :data:`PRUNED`): a tick redelivered
        from before it and found in no segment may have been pruned (see :meth:`resend`).

        The deletes are local at once, their tombstones reach the changelog later. A worker
        killed in between restarts with a store that no longer holds the doomed segments
        while the changelog still does, and the prune request comes again (its offset was
        not committed: commits wait for the changelog's acks); planned on that store alone
        it would find nothing to delete, send no tombstone, and a recovery from the
        changelog would keep what the calm run pruned (chaos soak, seed 2). So the keys a
        prune deletes are kept locally with its offset (:data:`PRUNE_LOG`), and the same
        request delivered again deletes, and tombstones, them again.
        """
        store = self.facts.data
        partition = event.message.partition
        db = store.db(partition)
        doomed = plan_prune_seeking(db.iter(), retention_ms)
        done_before = logged_prune(db.get(PRUNE_LOG), offset)
        if done_before:
            doomed = sorted(set(doomed).union(done_before))
        db.put(PRUNE_LOG, prune_log(offset, doomed))
        with under_event(event):
            for key in doomed:
                del self.facts[key]
            self.facts[PRUNED] = offset.to_bytes(8, "big", signed=True)
        counters.pruned_segments += len(doomed)
        counters.prunes += 1
        if doomed:
            log.info("pruner: partition %d dropped %d segments older than %.0fs",
                     event.message.partition, len(doomed), retention_ms / 1000)

    def facts_written(self, began: tuple[float, float]) -> None:
        """The batch's new facts are queryable: note when, and their lags.

        Event lag is now minus each new fact's event time (a real feed: how far the store
        trails the markets; meaningless for replays of old ticks); arrival lag is now minus
        each message's Kafka timestamp (produce -> queryable, whatever the ticks' times).

        ``began`` is (wall clock, process CPU) when the batch started: the first batch with
        facts counts from there, so first-to-last spans every fact's work.
        """
        fresh, self.fresh_ts = self.fresh_ts, []
        stamps, self.stamps = self.stamps, []
        if not fresh:
            return
        now, cpu = time.time(), time.process_time()
        self.rebalances.wrote(self.fresh_partitions)
        self.fresh_partitions.clear()
        counters.arrival_lag.add(now * 1000.0 - np.array(stamps, dtype=np.float64))
        if counters.first_fact_time is None:
            counters.first_fact_time, counters.first_fact_cpu = began
        counters.last_fact_time, counters.last_fact_cpu = now, cpu
        counters.lag.add(now * 1000.0 - np.concatenate(fresh).astype(np.float64))

    async def dead_letter(self, msg: Any, rejected: Rejected) -> None:
        """Send the original bytes with the reason and origin to the dead-letter topic.

        ``msg`` is the consumed record (``topic``, ``partition``, ``offset``, ``key``,
        ``value``).
        """
        counters.dead_letters[rejected.reason] += 1
        headers = {
            "gswarm-reason": rejected.reason.encode(),
            "gswarm-detail": rejected.detail[:1000].encode(),
            "gswarm-topic": msg.topic.encode(),
            "gswarm-partition": str(msg.partition).encode(),
            "gswarm-offset": str(msg.offset).encode(),
            "gswarm-time-ms": str(int(time.time() * 1000)).encode(),
        }
        if rejected.index is not None:
            headers["gswarm-index"] = str(rejected.index).encode()
        value = rejected.element if rejected.element is not None else msg.value
        await self.deadletters.send(key=msg.key, value=value, headers=headers)


def unstored_counted(unstored: list[Arrival], record: MarketRecord) -> set[int]:
    """Seqs of redelivered ticks found in no segment that the sketches still count.

    Called for ticks that sit between segments with a prune after them: a duplicate bet,
    or a tick whose segment that prune removed. Which one cannot be told for sure; a tick
    without a bet id cannot be a duplicate, and one whose bet is no longer among the
    market's recent bets is taken for a pruned tick (a duplicate bet is caught only while
    its original is recent). Exact unless a prune and a duplicate bet of a recent bet both
    fall between the committed offset and the crash.
    """
    known = [a.tick.id for a in unstored if a.tick.id is not None]
    hashes = iter(hash_ids(known).tolist() if known else ())
    recent = set(record.recent.tolist())
    counted: set[int] = set()
    for a in unstored:
        bet = 0 if a.tick.id is None else next(hashes)
        if not bet or bet not in recent:
            counted.add(seq_for(a.offset, a.index))
    return counted


def prune_log(offset: int, keys: list[bytes]) -> bytes:
    """The :data:`PRUNE_LOG` value: the request's offset and the keys the prune deleted."""
    return b"".join((offset.to_bytes(8, "big", signed=True),
                     *(len(k).to_bytes(2, "big") + k for k in keys)))


def logged_prune(value: bytes | None, offset: int) -> list[bytes]:
    """The keys a logged prune deleted, if it was the prune request at ``offset``."""
    if value is None or int.from_bytes(value[:8], "big", signed=True) != offset:
        return []
    keys, pos = [], 8
    while pos < len(value):
        size = int.from_bytes(value[pos:pos + 2], "big")
        keys.append(value[pos + 2:pos + 2 + size])
        pos += 2 + size
    return keys
