"""Gswarm's tables and topics."""

from __future__ import annotations

from typing import Any

import faust

from gswarm.stream.app import app, settings
from gswarm.stream.delivery import RunTopic
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


class FactTable(GswarmTable):
    """A table whose store expands segments into EAVT datoms (:mod:`factstore`)."""

    store_class = FactStore


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
