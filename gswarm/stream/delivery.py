"""Run delivery: a Faust transport driver that hands an agent whole runs of messages.

Faust moves every fetched message on its own through the conductor, a channel queue and the
stream: a ``ConsumerMessage``, an ``Event``, a schema decode, two tasks and an
``asyncio.wait`` (``Consumer._drain_messages`` races each delivery against the flow-suspend
event), a queue put and get, sensor calls and an ack, about 110-190 µs of CPU per message
on this machine (BENCHMARKS.md, "The delivery ceiling"). A bare aiokafka consumer reads the
same topic at 3 µs per message. This module keeps Faust and pays that machinery once per
*run*: the messages of one topic partition that one fetch returned, in offset order.

It plugs in through Faust's public extension points only:

* :class:`Transport` is a transport driver registered for its own URL scheme
  (``gswarm://host:port``, entry point ``faust.transports`` in ``pyproject.toml``). It is
  Faust's aiokafka driver with two classes swapped: :class:`RunConsumer` and
  :class:`RunConductor`.
* :class:`RunTopic` is a ``faust.Topic`` whose events are runs: ``event.value`` is the
  list of the run's records (aiokafka's ``ConsumerRecord``: ``topic``, ``partition``,
  ``offset``, ``timestamp``, ``key``, ``value``, ``headers``, raw bytes), and
  ``event.message`` a :class:`MessageRun` standing for all of them.

What each override changes, and why Faust's contract still holds:

* ``RunConsumer._drain_messages`` (Faust's fetcher loop): for a partition whose every
  subscriber is a :class:`RunTopic`, it delivers the fetch's records of that partition as
  one run, raced against ``suspend_flow`` exactly as Faust races one message; for any other
  partition (table changelogs during recovery, standbys, ordinary topics) it runs Faust's
  own per-message delivery, unchanged. Everything Faust checks per message is checked per
  record or per run: flow stopped (stop), generation changed since the fetch began (stop;
  Faust compares with the generation at the fetch's end), partition paused or
  revoked (skip), read offset (records before it are dropped), offset gaps (recorded for
  the commit), ``broker_commit_every``, and a seek back to the committed offsets when
  records arrive while the flow is stopped.
* ``RunConductor.on_run``: takes the same flow-control and producer-ebb waits as Faust's
  per-message handler, then puts one event per subscribing channel; a full queue blocks
  delivery (back-pressure) and pauses the partition's fetching as Faust does. A put that a
  rebalance cancels by clearing the queue drops the run, unacked (Faust's fetcher died of
  it); the rebalance's seek brings it again.
* :class:`MessageRun`: tracked, counted by sensors and acked once per run. Its final ack
  marks every offset of the run acked at once (``RunConsumer.ack_run``) under Faust's
  ``ack_lock``, with Faust's own rules (not below the committed offset, not twice), so
  offsets are committed only after the agent has processed the run: Faust's ``_new_offset``
  still commits only contiguous acked offsets, and (stricter than Faust,
  ``RunConsumer._new_offset``) only when they start at the committed offset. Also stricter
  than Faust, a run acks nothing if the stream skipped it instead of handing it to the agent
  (flow suspended for a rebalance: :class:`RunHandoff`) or if it was fetched in an earlier
  consumer generation: its partition was sought back to the committed offset and it comes
  again.
* ``RunConsumer.on_partitions_revoked`` commits what was processed before Faust drops
  the revoked partitions' acks; ``RunConsumer._commit_offsets`` commits only once every
  message produced before (changelog writes, dead letters) is acknowledged by the broker
  (:class:`RunProducer` tracks them). Both apply to every partition.
* ``RunConsumerThread._create_worker_consumer``: Faust's consumer, with the broker's wait
  for a fetch set from the URL's ``fetch_max_wait_ms`` (default :data:`FETCH_MAX_WAIT_MS`)
  instead of Faust's fixed 1500 ms. aiokafka keeps one fetch in flight per broker, and
  while every busy partition still has fetched records waiting, that fetch asks only for
  quiet partitions (e.g. the tables' changelogs), which the broker holds for the full wait:
  busy partitions then could not be fetched again for up to 1.5 s (p50 1.2 s, p99 2.3 s
  produce -> queryable at 5k ticks/s; 0.25 s and 0.5 s with 50 ms). Only how long an empty
  fetch waits changes; what is fetched, delivered and committed does not.
* ``RunConsumer._drain_messages`` (the loop that hands fetched records on) does not wait
  out Faust's fixed 1 s when no partition is active. While a recovery runs every
  partition is paused, and Faust's ``_wait_next_records`` then sleeps a whole second;
  the partitions resumed when the recovery ends waited for that sleep (after a failover:
  0.9-1.1 s between Faust's "Worker ready" and the first fetch). The loop polls every
  :data:`PAUSED_POLL_S` instead, and waits :data:`FETCH_WAIT_S` (not 1 s) for records, so
  a partition resumed during a wait is fetched soon. Only when the loop looks changes;
  what is fetched, delivered and committed does not.
* Seeks and fetches are kept apart (:class:`Seeks`; ``RunConsumer.seek``,
  ``seek_to_committed`` and ``seek_wait``, the three ways Faust seeks): a seek waits for
  the fetch in flight, no fetch starts during a seek, and a fetch's records of a
  partition sought since it began are not delivered, nor do they move the read offset.
  Faust resumes a rebalance's partitions *before* its seek to the committed offsets, so a
  fetch could run from the fetcher's old position (it reads ahead of what was processed)
  and be delivered after the seek, with its last offset overwriting the read offset the
  seek set: the agent was handed a kept partition's records from past offsets nobody
  processed (the "rebalance skip" of issue 15). Faust's 1 s sleep made that window rare;
  polling made it common (the stream stalled behind the agent's refusal of such runs).
  Faust's contract is unchanged: what a seek moves back is fetched again from there.
* ``RunConsumer.seek_to_committed`` crashes the worker (``app.crash``, as Faust does when a
  rebalance callback fails) if the seek takes over :data:`SEEK_LIMIT_SHARE` of
  ``broker_request_timeout``. Faust's recovery waits that long for it and then ends its
  task with ``ServiceStopped``: the worker stayed up, never ready, never consuming (twice
  in the chaos soak). A crash is seen, and the supervisor starts the worker again.
* ``RunConsumer._commit_offsets`` first runs the app's :func:`before_commit` hooks (state
  kept in memory between commits is written to its tables there, so its changelog
  messages are produced, and then acknowledged, before the offsets they cover).
* ``RunProducer.send_runs`` sends a table's queued changes of one batch as Kafka record
  batches, one per partition (as many as fit ``producer_max_batch_size``), each tracked
  like a buffered message (a commit waits for it), with one callback per batch; the
  ``facts`` table queues its changes for it (``FactTable`` in :mod:`gswarm.stream.tables`,
  whose doc says why Faust's table contract still holds). Faust's send sensors and
  ``on_produce_message`` do not see those messages.
* Faust's sensors (the monitor, Prometheus) see a run as one message and one event. Gswarm
  counts messages and ticks itself (``/api/stats``).

A :class:`RunTopic` on any other transport (``kafka://``, ``agent.test_context()``) still
works: each message arrives as a run of one (``RunTopic.decode``), through Faust's own path.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, cast

import faust
from aiokafka.errors import KafkaError
from faust.exceptions import ProducerSendError
from faust.transport.conductor import Conductor
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP, EventT
from faust.types.tuples import ConsumerMessage, ack_lock
from mode.utils.futures import notify

SCHEME = "gswarm"
#: how long the drain loop waits for records before it looks at the partitions again
#: (Faust: 1 s); records that arrive end the wait at once. A seek waits for the fetch in
#: flight (:class:`Seeks`), and a recovery seeks three times, so this bounds each wait.
FETCH_WAIT_S = 0.05
#: how often the drain loop looks for resumed partitions while every one is paused
PAUSED_POLL_S = 0.02


class MessageRun(ConsumerMessage):
    """Consecutive records of one partition from one fetch, delivered and acked as one.

    Its ``offset`` (and ``timestamp``) are those of the run's last record; ``records`` are
    the run's records in offset order.
    """

    __slots__ = ("handed", "records")

    def __init__(self, tp: TP, records: Sequence[Any], generation_id: int | None) -> None:
        last = records[-1]
        timestamp = last.timestamp / 1000.0 if last.timestamp is not None else cast(float, None)
        super().__init__(
            tp.topic, tp.partition, last.offset, timestamp, last.timestamp_type, None,
            None, None, None, 0, 0, tp, generation_id=generation_id,
        )
        self.records = records
        #: set when a stream hands the run to its agent (:class:`RunHandoff`)
        self.handed = False

    def on_final_ack(self, consumer: Any) -> bool:
        return bool(consumer.ack_run(self))

    def __repr__(self) -> str:
        return (f"<MessageRun: {self.tp} offsets={self.records[0].offset}-{self.offset} "
                f"n={len(self.records)}>")


class RunTopic(faust.Topic):
    """A topic whose events are runs of raw records of one partition (see module doc).

    ``maxsize`` counts runs: the agent's buffer holds at most that many (each at most one
    fetch's worth of its partition).
    """

    delivers_runs: ClassVar[bool] = True

    def __init__(self, app: Any, **kwargs: Any) -> None:
        kwargs.setdefault("key_type", bytes)
        kwargs.setdefault("value_type", bytes)
        kwargs.setdefault("key_serializer", "raw")
        kwargs.setdefault("value_serializer", "raw")
        super().__init__(app, **kwargs)

    async def decode(self, message: Any, *, propagate: bool = False) -> EventT[Any]:
        """One message on Faust's per-message path (another transport): a run of one."""
        return self._create_event(None, [message], message.headers, message)


def run_records(event: EventT[Any]) -> Sequence[Any]:
    """The records of a :class:`RunTopic` event."""
    return cast(Sequence[Any], event.value)


class RunHandoff(faust.Sensor):
    """Marks a run handed to an agent, so only those are acked (Faust's sensor hook).

    A stream that reads an event while the flow is suspended (a rebalance is under way) or
    from an earlier generation skips it *and acks it*, unprocessed; acked offsets are then
    committed and those messages never come again. Faust calls ``on_stream_event_in`` only
    for the events it does hand to the agent, so a run not marked here is not acked: its
    partition is sought back to the committed offset and it is delivered again.
    """

    def on_stream_event_in(self, tp: TP, offset: int, stream: Any, event: EventT[Any]) -> None:
        message = event.message
        if isinstance(message, MessageRun):
            message.handed = True


class RunConductor(Conductor):
    """Faust's conductor, plus delivery of a run to channels that take runs."""

    def __init__(self, app: Any, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        # registered with the app now, not at the first run: Faust's sensor hooks keep
        # per-sensor state from a rebalance's start to its end, and a sensor added in
        # between made the end crash (KeyError in SensorDelegate.on_rebalance_end)
        self._handoff = RunHandoff()
        app.sensors.add(self._handoff)

    def subscribed(self, tp: TP) -> bool:
        """True if a channel reads ``tp`` (an agent's topic, not Faust's leader topic)."""
        return bool(self._tp_index.get(TP(tp.topic, tp.partition)))

    def takes_runs(self, tp: TP) -> bool:
        """True if every channel subscribed to ``tp`` is a :class:`RunTopic`."""
        channels = self._tp_index.get(tp) or ()
        return bool(channels) and all(
            getattr(channel, "delivers_runs", False) for channel in channels)

    async def on_run(self, tp: TP, records: Sequence[Any], generation_id: int | None) -> bool:
        """Deliver ``records`` (one partition, offset order) as one event per channel;
        False if they were dropped instead (a rebalance cleared a full channel)."""
        async with self._tp_to_callback_lock:
            channels = list(self._tp_index.get(tp) or ())
        if not channels:
            return True
        app = self.app
        await app.flow_control.acquire()
        await app.producer.buffer.wait_until_ebb()
        run = MessageRun(tp, records, generation_id)
        run.incref(len(channels))
        consumer = app.consumer

        def on_pressure_high() -> None:
            app.sensors.on_topic_buffer_full(tp)
            consumer.on_buffer_full(tp)

        def on_pressure_drop() -> None:
            consumer.on_buffer_drop(tp)

        for channel in channels:
            event = app.create_event(None, records, None, run)
            queue = channel.queue
            if queue.full():
                app.sensors.on_topic_buffer_full(tp)
                try:
                    await channel.put(event)
                except asyncio.CancelledError:
                    task = asyncio.current_task()
                    if task is not None and task.cancelling():
                        raise  # this delivery is cancelled (flow suspended, stopping)
                    # The queue was cleared for a rebalance (ThrowableQueue.clear cancels
                    # the puts waiting on it). Faust's fetcher took that for its own
                    # cancellation and died ("no attribute 'wakeup'"). The run is dropped,
                    # unacked: the rebalance seeks its partition back to the committed
                    # offset and it comes again.
                    return False
            else:
                queue.put_nowait_enhanced(event, on_pressure_high=on_pressure_high,
                                          on_pressure_drop=on_pressure_drop)
        return True


class RunConsumerThread(aiokafka_driver.AIOKafkaConsumerThread):
    """Faust's consumer thread; the broker's fetch wait comes from the transport URL."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka reads this when start() builds its fetcher (the thread starts it later)
        consumer._fetch_max_wait_ms = fetch_max_wait_ms(transport.url)
        return consumer


@dataclasses.dataclass(frozen=True)
class SeekFence:
    """The seeks counted per partition when a fetch began (:meth:`Seeks.fetching`)."""

    each: dict[TP, int]


class Seeks:
    """Keeps fetches and seeks apart, and tells which fetched records a seek made stale.

    Faust resumes a rebalance's partitions *before* it seeks them to their committed
    offsets (``Recovery._resume_streams`` and ``on_recovery_completed``), and its drain
    loop takes the consumer generation only after a fetch returns, so a fetch that ran
    before the seek could be delivered after it: records from the position the fetcher
    had in the last generation (past what was processed, as it reads ahead), and their
    last offset then overwrote the read offset the seek had set. Here a seek waits for
    the fetch in flight to return and no fetch starts while a seek runs, so every fetch
    ran wholly before or wholly after each seek; a fetch's records of a partition sought
    since the fetch began are dropped (the seek moved the fetch position back, so they
    come again from where it went).
    """

    def __init__(self) -> None:
        self._each: dict[TP, int] = {}
        self._seeking = 0
        self._fetching = False
        self._no_seek = asyncio.Event()
        self._no_fetch = asyncio.Event()
        self._no_seek.set()
        self._no_fetch.set()

    def since(self, fence: SeekFence, tp: TP) -> bool:
        """True if a seek of ``tp`` began since the fetch of ``fence`` began."""
        return self._each.get(tp, 0) != fence.each.get(tp, 0)

    @contextlib.asynccontextmanager
    async def seeking(self, tps: Iterable[TP]) -> AsyncIterator[None]:
        """Around a seek that moves ``tps``."""
        # counted at once: records fetched before this point are stale for ``tps``
        for tp in tps:
            key = TP(tp.topic, tp.partition)
            self._each[key] = self._each.get(key, 0) + 1
        self._seeking += 1  # from now on no fetch starts
        self._no_seek.clear()
        try:
            while self._fetching:  # the fetch in flight returns first
                await self._no_fetch.wait()
            yield
        finally:
            self._seeking -= 1
            if not self._seeking:
                self._no_seek.set()

    @contextlib.asynccontextmanager
    async def fetching(self) -> AsyncIterator[SeekFence]:
        """Around a fetch: waits for seeks under way; yields the fence to check runs by."""
        while self._seeking:
            await self._no_seek.wait()
        self._fetching = True
        self._no_fetch.clear()
        try:
            yield SeekFence(dict(self._each))
        finally:
            self._fetching = False
            self._no_fetch.set()


#: the share of Faust's ``broker_request_timeout`` a seek to the committed offsets may take
SEEK_LIMIT_SHARE = 0.8


class SeekTimeout(Exception):
    """A seek to the committed offsets did not finish in time (the worker crashes)."""


class RunConsumer(aiokafka_driver.Consumer):
    """Faust's aiokafka consumer with run delivery for partitions read by run topics."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._seeks = Seeks()

    # Every seek goes through one of these three (see :class:`Seeks`).
    async def seek_to_committed(self) -> Mapping[TP, int]:
        """Faust's seek of every assigned partition to its committed offset; one with none
        goes to the beginning, where the group starts it (``consumer_auto_offset_reset``
        "earliest", Gswarm's setting).

        aiokafka's ``seek_to_committed`` leaves a partition with no committed offset (or
        0) where its fetcher is, so records fetched before it and dropped here as stale
        (see :class:`Seeks`) would never come again. Only partitions an agent reads
        count: table changelogs (never committed; recovery and standbys place them with
        ``seek_wait``) and Faust's leader topic (read by no one; asking for its beginning
        hung a worker whose broker had moved its leader) are left as Faust leaves them,
        and their records are not stale for this seek.
        """
        # Faust's recovery gives this seek ``broker_request_timeout``; past it the recovery
        # task ends (ServiceStopped) and the worker never gets ready, without a word. So
        # a seek that cannot finish crashes the worker first, as Faust does when a
        # rebalance callback fails: the supervisor starts it again, with fresh metadata.
        limit = SEEK_LIMIT_SHARE * self.app.conf.broker_request_timeout
        try:
            return await asyncio.wait_for(self._seek_to_committed(), limit)
        except TimeoutError:
            reason = SeekTimeout(f"the seek of the stream partitions to their committed "
                                 f"offsets took over {limit:.0f} s")
            await self.app.crash(reason)
            raise reason from None

    async def _seek_to_committed(self) -> Mapping[TP, int]:
        conductor = cast(RunConductor, self.app.topics)
        moved = {tp for tp in self.assignment()
                 if not self._is_changelog_tp(tp) and conductor.subscribed(tp)}
        async with self._seeks.seeking(moved):
            committed = await super().seek_to_committed()
            unset = [tp for tp, offset in committed.items()
                     if (not offset or offset <= 0) and TP(tp.topic, tp.partition) in moved]
            if unset and self.app.conf.consumer_auto_offset_reset == "earliest":
                # within the whole seek's limit: a reset that cannot finish yet stays
                # requested (aiokafka fetches nothing of the partition before it is done)
                bound = SEEK_LIMIT_SHARE / 2 * self.app.conf.broker_request_timeout
                try:
                    await asyncio.wait_for(self._thread.seek_to_beginning(*unset), bound)
                except Exception as exc:  # as a failed seek in Faust: logged, not raised
                    self.log.warning("could not seek %s to their beginning: %r", unset, exc)
            return committed

    async def seek(self, partition: TP, offset: int) -> None:
        async with self._seeks.seeking((partition,)):
            await super().seek(partition, offset)

    async def seek_wait(self, partitions: Mapping[TP, int]) -> None:
        async with self._seeks.seeking(partitions):
            await super().seek_wait(partitions)

    def _new_consumer_thread(self) -> RunConsumerThread:
        return RunConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def committed(self, tps: Iterable[TP]) -> dict[TP, int | None]:
        """The offset committed (or found at assignment) for each of ``tps``: the next
        offset the group would read from; None if Faust has none for it yet."""
        return {tp: self._committed_offset.get(tp) for tp in tps}

    def ack_run(self, run: MessageRun) -> bool:
        """Mark every offset of ``run`` acked (Faust's ``ack`` rules, once per run)."""
        with ack_lock:
            if run.acked:
                return False
            run.acked = True
            # acked or not, the run no longer holds up Faust's wait_empty
            self._unacked_messages.discard(run)
            try:
                if not run.handed:
                    return False  # skipped by the stream, never processed (RunHandoff)
                if run.generation_id != self.app.consumer_generation_id:
                    # fetched before a rebalance: the partition was sought back to its
                    # committed offset, so these records come again; acking them here
                    # could commit offsets the new generation never processed
                    return False
                tp = run.tp
                if not self.app.topics.acks_enabled_for(run.topic):
                    return False
                committed = self._committed_offset[tp]
                index = self._acked_index[tp]
                fresh = [r.offset for r in run.records
                         if (committed is None or r.offset >= committed)
                         and r.offset not in index]
                if not fresh:
                    return False
                index.update(fresh)
                self._acked[tp].extend(fresh)
                self._n_acked += len(fresh)
                return True
            finally:
                notify(self._waiting_for_ack)

    def _new_offset(self, tp: TP) -> int | None:
        """Faust's next offset to commit, only if the acked offsets start where the last
        commit ended.

        Faust's check lets a commit jump over a hole of one offset at the head of the acked
        offsets (it returns None only when the first acked offset is *more* than one past
        the committed offset), and skips the check when the committed offset is 0. A run
        left unacked (skipped by the stream in a rebalance, :class:`RunHandoff`) followed by
        an acked one made such a hole: with a run of one message at the committed offset,
        or at offset 0 of a new partition, Faust committed past messages no one processed,
        and they were never delivered again. Offsets Faust knows were never there (its
        gaps) still count as acked.
        """
        committed = self._committed_offset[tp]
        acked = self._acked[tp]
        if committed is not None and acked:
            head = min(acked)
            if head > committed:
                known = sum(min(i.end, head) - max(i.begin, committed)
                            for i in self._gap[tp].overlap(committed, head))
                if known < head - committed:
                    return None  # offsets before the acked ones were never processed
        return super()._new_offset(tp)

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        """Commit what was processed on ``revoked`` partitions, then let Faust revoke them.

        Faust's revoke drops the acked offsets of revoked partitions first and commits after
        (its ``wait_empty``), so whatever was processed since the last periodic commit was
        processed again by the partition's next owner (or by this worker, for a partition it
        keeps): shown by ``tests/stream/test_delivery_e2e.py`` on Faust's own path. Finishing
        the runs in hand and committing first keeps at-least-once (only acked offsets are
        committed) and makes a graceful rebalance exactly-once.
        """
        if revoked and not self.app.client_only:
            # Runs the agent already holds (a batch in progress, runs taken into the next
            # one) are acked only once processed: stop the flow and let them finish first,
            # as Faust does later in the revoke (stop_flow, suspend, clear, wait_empty) but
            # only after it dropped the acks. Queued runs not yet handed are dropped and
            # come again from the committed offset, to whoever owns the partition next.
            self.stop_flow()
            self.app.flow_control.suspend()
            self.app.flow_control.clear()
            await self.wait_empty()
            # a commit in flight may predate the last acks: wait for it, then commit
            while self._commit_fut is not None:
                await self.maybe_wait_for_commit_to_finish()
            await self.commit(revoked)
        await super().on_partitions_revoked(revoked)

    async def _commit_offsets(self, offsets: Mapping[TP, int],
                              start_new_transaction: bool = True) -> bool:
        """Commit ``offsets`` only once every message produced before is acknowledged.

        Faust flushes the producer before a commit, but its buffer's flush gives up after
        0.1 s without a send, and even a drained buffer (size 0) can hold back the message
        its sender took last and is still handing to aiokafka, which aiokafka's flush
        then does not wait for. Killed right after such a commit, a worker left offsets
        committed whose table changes never reached Kafka, and a worker recovering from
        the changelogs lost them (``tests/stream/test_gaps_e2e.py``, with a slow
        producer). Here the commit waits until every message handed to the producer's
        buffer before it is acknowledged by the broker (:meth:`RunProducer.acknowledged`,
        bounded by ``broker_request_timeout``; past it nothing is committed and the
        messages are processed again).
        """
        for hook in _BEFORE_COMMIT.get(self.app, ()):
            hook()
        producer = cast(RunProducer, self.app.producer)  # Transport pairs the two classes
        timeout = self.app.conf.broker_request_timeout
        unacknowledged = await producer.acknowledged(timeout)
        if unacknowledged:
            self.log.error("not committing: %d produced messages not acknowledged after %.0fs",
                           unacknowledged, timeout)
            return False
        committed = bool(await super()._commit_offsets(offsets, start_new_transaction))
        if committed and _FAULTS.get(self.app, Faults()).kill_after_commit:
            self.log.warning("fault injection: SIGKILL right after a commit")
            os.kill(os.getpid(), signal.SIGKILL)
        return committed

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - Faust's loop
        conductor = cast(RunConductor, self.app.topics)  # Transport pairs the two classes
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                self.diag.set_flag(CONSUMER_FETCHING)
                if not self.flow_active:  # as Faust's _wait_next_records
                    await self.wait(self.can_resume_flow)  # type: ignore[arg-type]
                async with self._seeks.fetching() as fence:
                    # the generation the fetch began in (Faust reads it after the fetch,
                    # so records fetched across a rebalance passed as the new one's)
                    generation_id = self.app.consumer_generation_id
                    active = None if self.app.client_only else self._get_active_partitions()
                    idle = active is not None and not active
                    records = {} if idle else await self._getmany(
                        active_partitions=active, timeout=FETCH_WAIT_S)
                if idle:
                    # every partition paused (a recovery under way): Faust's
                    # _wait_next_records sleeps a whole second here, and the partitions
                    # resumed when the recovery ends waited for it
                    await self.sleep(PAUSED_POLL_S)
                    continue
                await self.sleep(0)
                if records is None or self.should_stop:
                    continue
                if not self.flow_active:
                    # as Faust's getmany: records fetched while the flow is stopped are
                    # dropped, and the fetch position goes back to the committed offsets
                    await self._seek_back()
                    continue
                for tp, tp_records in runs_in_order(records):
                    if not self.flow_active or (
                            self.app.consumer_generation_id != generation_id):
                        break
                    if not (active is None or tp in active
                            or tp in self._buffered_partitions):
                        continue
                    if self._seeks.since(fence, tp):
                        continue  # fetched before a seek: comes again from where it went
                    self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
                    if conductor.takes_runs(tp):
                        await self._deliver_run(tp, tp_records, generation_id, fence)
                    else:
                        await self._deliver_each(tp, tp_records, fence)
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)

    async def _seek_back(self) -> None:
        try:
            await self.perform_seek()
        except Exception as exc:  # as Faust: a failed seek is logged, the next fetch retries
            self.log.warning("exception performing seek when flow not active %r", exc)

    def _fresh(self, tp: TP, records: Sequence[Any]) -> tuple[list[Any], list[tuple[int, int]]]:
        """Records at or after the read offset, and the offset gaps before and among them."""
        r_offset = self._read_offset[tp]
        fresh = list(records) if r_offset is None else [
            r for r in records if r.offset >= r_offset]
        gaps: list[tuple[int, int]] = []
        if not fresh:
            return fresh, gaps
        previous = r_offset
        if previous is None or fresh[-1].offset - fresh[0].offset + 1 == len(fresh):
            # contiguous run: a gap can only precede it
            if previous and fresh[0].offset - previous > 1:
                gaps.append((previous + 1, fresh[0].offset))
            return fresh, gaps
        for record in fresh:
            if previous and record.offset - previous > 1:
                gaps.append((previous + 1, record.offset))
            previous = record.offset
        return fresh, gaps

    async def _before_delivery(self, tp: TP, gaps: Iterable[tuple[int, int]]) -> None:
        if self.app.topics.acks_enabled_for(tp.topic):
            for first, last in gaps:
                await self._add_gap(tp, first, last)
        commit_every = self._commit_every
        if commit_every is not None and self._n_acked >= commit_every:
            self._n_acked = 0
            await self.commit()

    async def _deliver_run(self, tp: TP, records: Sequence[Any], generation_id: int,
                           fence: SeekFence) -> None:
        fresh, gaps = self._fresh(tp, records)
        if not fresh:
            return
        await self._before_delivery(tp, gaps)
        conductor = cast(RunConductor, self.app.topics)
        delivery = await self.wait_first(conductor.on_run(tp, fresh, generation_id),
                                         self.suspend_flow.wait())
        if delivery.stopped or self._seeks.since(fence, tp):
            return  # a seek meanwhile set the read offset
        if any(result is False for result in delivery.results):
            return  # dropped by a rebalance: comes again from the committed offset
        self._read_offset[tp] = fresh[-1].offset

    async def _deliver_each(self, tp: TP, records: Sequence[Any], fence: SeekFence) -> None:
        """Faust's own per-message delivery (conductor callback raced against suspend)."""
        callback = self.callback
        for record in records:
            if not self.flow_active or self._seeks.since(fence, tp):
                return
            fresh, gaps = self._fresh(tp, (record,))
            if not fresh:
                self.log.dev("DROPPED MESSAGE ROFF %r", record.offset)
                continue
            await self._before_delivery(tp, gaps)
            await self.wait_first(callback(self._to_message(tp, record)),
                                  self.suspend_flow.wait())
            if not self._seeks.since(fence, tp):
                self._read_offset[tp] = record.offset


def runs_in_order(records: Mapping[TP, list[Any]]) -> list[tuple[TP, list[Any]]]:
    """Each partition's records as one run, oldest first within a topic, round-robin over
    topics (as Faust's scheduler).

    Faust interleaves topics so a busy topic cannot starve another; within a fetch, one
    partition's records stay together here, in offset order. Within a topic, the run whose
    first record is the oldest (Kafka timestamp) goes first, as Kafka Streams picks the
    partition with the smallest head timestamp: when a fetch brings several partitions'
    backlogs (after a rebalance: the partitions taken over from a dead worker, waiting
    since its last commit), the data waiting longest is processed first. Each partition's
    own order is untouched; the order across partitions is Kafka's to leave open.
    Partitions come as Faust's ``TP``.
    """
    by_topic: dict[str, list[tuple[TP, list[Any]]]] = {}
    for tp, tp_records in records.items():
        if tp_records:
            # Faust's own TP, not aiokafka's: the consumer's partition sets (paused,
            # active: on_buffer_full/drop) accept nothing else
            by_topic.setdefault(tp.topic, []).append((TP(tp.topic, tp.partition), tp_records))
    queues = [sorted(runs, key=_head_age) for runs in by_topic.values()]
    order: list[tuple[TP, list[Any]]] = []
    while queues:
        for queue in queues:
            order.append(queue.pop(0))
        queues = [q for q in queues if q]
    return order


def _head_age(run: tuple[TP, list[Any]]) -> tuple[bool, int]:
    """Sort key: the run's first record's timestamp (runs without one last)."""
    stamp = getattr(run[1][0], "timestamp", None)
    if isinstance(stamp, int) and stamp >= 0:
        return (False, stamp)
    return (True, 0)


#: A table change for :meth:`RunProducer.send_runs`: key and value (None: a tombstone).
Change = tuple[bytes, bytes | None]


class RunProducer(aiokafka_driver.Producer):
    """Faust's aiokafka producer; knows which messages are not acknowledged yet.

    Table writes (changelog messages) go through ``send_soon`` into Faust's buffer, whose
    sender hands them to aiokafka one at a time, or through :meth:`send_runs` as record
    batches; each one's future completes when the broker acknowledged it (or the send
    failed).
    """

    _unacked: set[asyncio.Future[Any]] | None = None
    #: the first send that failed (sticky: no commit may follow it, see :meth:`acknowledged`)
    failed: BaseException | None = None

    def _track(self, fut: Any) -> None:
        """Count ``fut`` as not acknowledged until it is done (:meth:`acknowledged`)."""
        if self._unacked is None:
            self._unacked = set()
        self._unacked.add(fut)
        fut.add_done_callback(self._unacked.discard)
        fut.add_done_callback(self._note_failure)

    def _note_failure(self, fut: asyncio.Future[Any]) -> None:
        """The first send that fails stops the worker (its changes would be missing from
        the changelog, or its dead letter or signal from their topic): a restart sends
        them again from its store, or processes their messages again."""
        exc = None if fut.cancelled() else fut.exception()
        if self.failed is None and exc is not None:
            self.failed = exc
            self.log.error("a produced message was not sent: %r; stopping", exc)
            self.add_future(self.app.crash(exc))

    async def _slow_down(self) -> None:
        delay = _FAULTS.get(self.app, Faults()).produce_delay_s
        if delay:
            await asyncio.sleep(delay)  # fault injection: a slow producer

    def send_soon(self, fut: Any) -> None:
        self._track(fut)
        super().send_soon(fut)

    async def send(self, topic: str, key: bytes | None, value: bytes | None,
                   partition: int | None, timestamp: float | None, headers: Any, *,
                   transactional_id: str | None = None) -> Any:
        await self._slow_down()
        fut = await super().send(topic, key, value, partition, timestamp, headers,
                                 transactional_id=transactional_id)
        self._track(fut)  # dead letters, signals: a commit waits for them too
        return fut

    async def send_runs(self, topic: str, runs: Mapping[int, Sequence[Change]],
                        on_sent: Callable[[int, int], None]) -> None:
        """Send each partition's ``runs[partition]`` (key, value) messages, in order, as
        few record batches as fit aiokafka's batch size (``producer_max_batch_size``);
        call ``on_sent(partition, offset of its last message)`` once the broker
        acknowledged them.

        A message through :meth:`send_soon` costs Faust a pending message, a buffer
        round trip through a task, a publish with its callbacks and sensors, and
        aiokafka a future of its own (with one write of the changelog offset per
        message: a quarter of the main thread at 1,000 ticks/s, py-spy 2026-11-29). A
        record batch costs that once. Each batch's future is tracked like a buffered
        message (:meth:`acknowledged`: a commit waits for it). A batch the broker
        refuses for good crashes the worker (:meth:`_note_failure`).
        """
        await self._slow_down()
        producer = self._ensure_producer()
        for partition, changes in runs.items():
            batch = producer.create_batch()
            count = 0
            for key, value in changes:
                if batch.append(key=key, value=value, timestamp=None) is None:
                    await self._send_batch(producer, batch, topic, partition, count, on_sent)
                    batch, count = producer.create_batch(), 0
                    if batch.append(key=key, value=value, timestamp=None) is None:
                        raise ValueError(f"a {topic} message of {len(value or b'')} bytes "
                                         f"does not fit an empty record batch")
                count += 1
            if count:
                await self._send_batch(producer, batch, topic, partition, count, on_sent)

    async def _send_batch(self, producer: Any, batch: Any, topic: str, partition: int,
                          count: int, on_sent: Callable[[int, int], None]) -> None:
        try:
            fut = await producer.send_batch(batch, topic, partition=partition)
        except KafkaError as exc:  # as Faust's send
            raise ProducerSendError(f"Error while sending: {exc!r}") from exc

        def done(fut: asyncio.Future[Any]) -> None:
            if fut.cancelled():
                return
            exc = fut.exception()
            if exc is None:
                on_sent(partition, fut.result().offset + count - 1)
            else:  # _note_failure stops the worker
                self.log.error("%d messages to %s[%d] were not sent: %r", count, topic,
                               partition, exc)

        fut.add_done_callback(done)
        self._track(fut)

    async def acknowledged(self, timeout: float) -> int:
        """Wait until every message buffered so far is acknowledged, at most ``timeout``
        s; then flush aiokafka (messages sent directly, e.g. dead letters). Returns how
        many are still not acknowledged (0: all are).

        Once a send has failed, or the producer crashed (its buffer sends nothing more),
        nothing is acknowledged any more (at least 1, at once): a change the changelog
        lacks, or a dead letter its topic lacks, must not be passed by a commit. The
        worker stops (:meth:`_note_failure` crashes it); its successor reads on from the
        last commit, and a restart on the same store sends the missing changes again
        (``Ingest.resend``). A failed send used to count as done, and a crashed worker's
        last commit waited ``timeout`` for a buffer that would never send.
        """
        pending = set(self._unacked or ())
        if self.failed is None and not self.crashed and pending:
            _, late = await asyncio.wait(pending, timeout=timeout)
            if late:
                return len(late)
        if self.failed is not None or self.crashed:
            self.log.error("not acknowledged: %s", self.failed or "the producer crashed")
            return max(1, len(self._unacked or ()))
        await self.flush()
        return 0


class Transport(aiokafka_driver.Transport):
    """Faust's aiokafka transport, delivering runs to :class:`RunTopic` subscribers."""

    Consumer = RunConsumer
    Conductor = RunConductor
    Producer = RunProducer


_BEFORE_COMMIT: weakref.WeakKeyDictionary[Any, list[Callable[[], None]]] = (
    weakref.WeakKeyDictionary())


def before_commit(app: Any, hook: Callable[[], None]) -> None:
    """Run ``hook`` before each offset commit of ``app`` (with this transport).

    What it writes to tables (under an event of the right partition) reaches Kafka before
    the offsets are committed: a write made here covers every message acked so far.
    """
    _BEFORE_COMMIT.setdefault(app, []).append(hook)


@dataclasses.dataclass(frozen=True)
class Faults:
    """Fault injection for tests (``GSWARM_FAULT_*``): off by default."""

    produce_delay_s: float = 0.0  # hold each produced message this long (a slow producer)
    kill_after_commit: bool = False  # SIGKILL this process right after a commit


_FAULTS: weakref.WeakKeyDictionary[Any, Faults] = weakref.WeakKeyDictionary()


def inject_faults(app: Any, faults: Faults) -> None:
    """Make ``app``'s producer and consumer misbehave as ``faults`` say (tests only)."""
    _FAULTS[app] = faults


#: How long the broker may hold a fetch with no new records (ms), unless the URL says.
FETCH_MAX_WAIT_MS = 25


def broker_urls(hosts: str, fetch_wait_ms: int | None = None) -> list[str]:
    """``host:port,host:port`` as this driver's broker URLs (``gswarm://host:port``).

    ``fetch_wait_ms`` rides on the first URL as ``?fetch_max_wait_ms=N`` (see
    :class:`RunConsumerThread`).
    """
    urls = [f"{SCHEME}://{hostport.strip()}" for hostport in hosts.split(",")]
    if fetch_wait_ms is not None:
        urls[0] += f"?fetch_max_wait_ms={int(fetch_wait_ms)}"
    return urls


def fetch_max_wait_ms(urls: Sequence[Any]) -> int:
    """The ``fetch_max_wait_ms`` of the first URL that has one, else the default."""
    for url in urls:
        value = getattr(url, "query", {}).get("fetch_max_wait_ms")
        if value is not None:
            return int(value)
    return FETCH_MAX_WAIT_MS
