"""Gswarm's tables and topics."""

from __future__ import annotations

from typing import Any, cast

import faust
from faust.types import TP

from gswarm.stream.app import app, settings
from gswarm.stream.delivery import Change, RunProducer, RunTopic
from gswarm.stream.factstore import FactStore
from gswarm.stream.storage import SharedStore


def rocksdb_options(lean: bool, memory_mb: int) -> dict[str, Any]:
    """RocksDB sizing: per database, and the budget every database shares (storage.py)."""
    mib = 1024 * 1024
    return {
        "memory_bytes": memory_mb * mib,
        "write_buffer_size": (4 if lean else 16) * mib,
        "max_write_buffer_number": 2,
        "target_file_size_base": 16 * mib,
        "max_open_files": 256,
    }


class GswarmTable(faust.Table[bytes, bytes]):
    """A Faust table on the shared RocksDB store that tolerates a changelog topic still
    being created (see below)."""

    store_class: type[SharedStore] = SharedStore

    def _new_store_by_url(self, url: Any) -> Any:
        return self.store_class(
            url, self.app, self,
            table_name=self.name, key_type=self.key_type,
            key_serializer=self.key_serializer, value_serializer=self.value_serializer,
            value_type=self.value_type, loop=self.loop, options=self.options,
        )

    def _verify_source_topic_partitions(self, source_topic: str) -> None:
        # Faust compares the source topic's partition count with the changelog's, from the
        # consumer's metadata snapshot. When workers start together, one may create the
        # changelog topic while another's snapshot still lists it with 0 partitions (not
        # yet created); Faust then raises PartitionsMismatch and the agent crashes (seen
        # in the failover benchmark). 0 partitions means "not known yet": check later.
        if self.app.consumer.topic_partitions(self.changelog_topic_name) == 0:
            return
        super()._verify_source_topic_partitions(source_topic)


class _Queued:
    """What :meth:`FactTable.send_changelog` returns: Faust's ``on_key_set`` reads only
    ``.message.partition`` of it."""

    __slots__ = ("message", "partition")

    def __init__(self, partition: int) -> None:
        self.partition = partition
        self.message = self


class FactTable(GswarmTable):
    """A table whose store expands segments into EAVT datoms (:mod:`factstore`), and
    whose changelog messages go out per batch.

    Faust sends each table change on its own (``Collection.send_changelog``:
    ``send_soon`` into the producer's buffer, then one aiokafka send, callback and
    RocksDB write of the changelog offset per message). A batch writes one segment per
    market, so that was a quarter of the main thread at 1,000 ticks/s (py-spy,
    2026-11-29). Here ``send_changelog`` only queues the change, by partition, and
    :meth:`flush_changelog` (awaited at the end of every ingest batch, the only place
    the table is written) sends each partition's queue as record batches
    (:meth:`~gswarm.stream.delivery.RunProducer.send_runs`).

    Faust's contract for a table holds: the store is written at once, as before; the
    changelog gets the same messages (key, value, partition, in the order of the
    writes); the changelog offset is persisted once a batch is acknowledged (Faust: per
    message, the last one wins either way); a commit waits for the batches as it waits
    for buffered messages, and the batch's runs are acked only after its flush has
    handed them to the producer, so committed offsets never pass a change that is not on
    the changelog. What changes: Faust's send sensors and ``on_produce_message`` do not
    see these messages (table-set sensors still do), and a write outside an ingest
    batch would wait for the next flush.
    """

    store_class = FactStore
    _outbox: dict[int, list[Change]] | None = None

    def send_changelog(self, partition: int | None, key: Any, value: Any,
                       key_serializer: Any = None, value_serializer: Any = None) -> Any:
        if partition is None or not isinstance(key, bytes) or not (
                value is None or isinstance(value, bytes)):
            raise TypeError(f"facts changes are bytes on a known partition, not "
                            f"{type(key).__name__} -> {type(value).__name__} on {partition}")
        if self._outbox is None:
            self._outbox = {}
        self._outbox.setdefault(partition, []).append((key, value))
        return _Queued(partition)

    async def flush_changelog(self) -> None:
        """Hand every queued change to the producer (see the class doc)."""
        outbox = self._outbox
        if not outbox:
            return
        self._outbox = {}
        producer = cast(RunProducer, self.app.producer)  # the gswarm:// transport's
        try:
            await producer.send_runs(self.changelog_topic.get_topic_name(), outbox,
                                     self._sent)
        except Exception as exc:
            # The changes not handed over are gone from the queue. Later batches must not
            # reach the changelog without them (each partition's changelog is a prefix of
            # its writes: Ingest.resend relies on it), so the worker stops; its successor
            # reads on from the committed offsets, which these changes never passed.
            self.log.error("changelog of %s not sent: %r", self.name, exc)
            await self.app.crash(exc)
            raise

    def _sent(self, partition: int, offset: int) -> None:
        # Faust's _on_changelog_sent, once per batch instead of once per message
        tp = TP(self.changelog_topic.get_topic_name(), partition)
        if self.app.in_transaction:
            self.app.tables.persist_offset_on_commit(self.data, tp, offset)
        else:
            self.data.set_persisted_offset(tp, offset)


#: Read in runs (gswarm/stream/delivery.py): an event per partition per fetch; at most
#: two batches' worth of runs wait in the agent's buffer.
tick_topic = RunTopic(
    app, topics=[settings.tick_topic], partitions=settings.partitions,
    maxsize=2 * settings.batch_runs_or_partitions,
)
deadletter_topic = app.topic(
    settings.deadletter_topic, key_type=bytes, value_type=bytes,
    key_serializer="raw", value_serializer="raw",
)

#: Changelog records a standby replica collects before it applies them. Faust applies a
#: standby's records only in batches of this size (1000 by default) and never flushes a
#: partial batch while the worker runs, so a replica stayed up to 999 records behind for
#: as long as its partition was quiet, and a failover to it replayed them first. Small
#: batches keep a standby within a few records of the changelog's end (its distance is in
#: /api/cluster ``standby_behind``) for a little more CPU per record.
STANDBY_BUFFER = 16

#: Signals (gswarm/core/signals.py), keyed by market, on the market's partition.
signals_topic = app.topic(
    settings.signals_topic, key_type=bytes, value_type=bytes,
    key_serializer="raw", value_serializer="raw",
)

facts = FactTable(
    app,
    name="facts",
    beacon=app.tables.beacon,
    key_type=bytes, value_type=bytes,  # bytes -> the "raw" codec
    partitions=settings.partitions,
    options=rocksdb_options(settings.lean, settings.rocksdb_memory_mb),
    standby_buffer_size=STANDBY_BUFFER,
    help="Segments (one per market per batch) expanded into EAVT datoms and market records.",
)
app.tables.add(facts)

#: One value per partition (key ``SKETCH_KEY`` in each partition's database): the
#: partition's sketches with the last source offset they applied.
SKETCH_KEY = b"sketch"
sketches = GswarmTable(
    app,
    name="sketches",
    beacon=app.tables.beacon,
    key_type=bytes, value_type=bytes,
    partitions=settings.partitions,
    options=rocksdb_options(settings.lean, settings.rocksdb_memory_mb),
    standby_buffer_size=1,  # one large record per partition and commit: apply each at once
    help="Per-partition HLL/CMS/top-k/window sketches and their last applied offset.",
)
app.tables.add(sketches)
