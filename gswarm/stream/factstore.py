"""The RocksDB store behind the ``facts`` table: segments in, EAVT datoms on disk.

Faust sees a table whose keys are segment keys and whose values are encoded segments (one
changelog message per market per batch). Whenever a segment is written -- by the agent, by
changelog recovery, or by a standby replica reading the changelog -- this store also writes
the segment's datoms and the market record it carries into the same partition database, in
one RocksDB write batch. Queries then are range scans over ordered keys (see
:mod:`gswarm.core.facts`).

The agent writes a batch's segments inside :meth:`FactStore.batched`: one RocksDB write
per partition for the whole batch instead of one per market (each write appends to the
WAL: ~45 us, 5 % of the main thread at 1,000 ticks/s, py-spy 2026-11-29). The block is
synchronous (nothing else reads the store before it ends), so every reader still finds
each segment with its datoms and record, or none of them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import rocksdict
from faust.streams import current_event
from faust.types import TP, EventT

from gswarm.core.facts import SEGMENT, Segment, market_key
from gswarm.stream.storage import SharedStore


class FactStore(SharedStore):
    """Faust's RocksDB store (rocksdict, shared memory) with segment expansion."""

    _known: tuple[bytes, Segment] | None = None
    #: partition -> the write batch of :meth:`batched` (None: each write goes at once)
    _pending: dict[int, rocksdict.WriteBatch] | None = None

    @contextmanager
    def batched(self) -> Iterator[None]:
        """Writes in this (synchronous) block go to one RocksDB write batch per partition,
        written when it ends, even if it raises (as if each had been written at once)."""
        if self._pending is not None:
            yield
            return
        self._pending = {}
        try:
            yield
        finally:
            pending, self._pending = self._pending, None
            for partition, batch in pending.items():
                self._db_for_partition(partition).write(batch)

    def expect(self, value: bytes, segment: Segment) -> None:
        """The next write of ``value`` (this very bytes object) holds ``segment``.

        The agent just encoded it; the write then expands it without decoding it again.
        """
        self._known = (value, segment)

    def db(self, partition: int) -> Any:
        """The rocksdict database of one partition (opened on first use)."""
        return self._db_for_partition(partition)

    def open_partitions(self) -> list[int]:
        return sorted(self._dbs)

    def segment_keys(self, partition: int, prefix: bytes = SEGMENT) -> list[bytes]:
        """Segment keys of a partition (all, or those starting with ``prefix``: one
        market's), in key order (market, then time)."""
        it = self.db(partition).iter()
        it.seek(prefix)
        keys = []
        while it.valid() and it.key().startswith(prefix):
            keys.append(it.key())
            it.next()
        return keys

    def _set(self, key: bytes, value: bytes | None) -> None:
        event = current_event()
        assert event is not None, "facts are written while processing an event"
        partition = event.message.partition
        db = self._db_for_partition(partition)
        known, self._known = self._known, None
        segment = known[1] if known is not None and known[0] is value else None
        pending = self._pending
        if pending is not None and value is not None:
            if partition not in pending:
                pending[partition] = rocksdict.WriteBatch(raw_mode=True)
            _expand(pending[partition], key, value, db.get, segment)
            return
        if pending is not None and partition in pending:
            db.write(pending.pop(partition))  # a delete reads what is stored: write first
        batch = rocksdict.WriteBatch(raw_mode=True)
        _expand(batch, key, value, db.get, segment)
        db.write(batch)

    def _del(self, key: bytes) -> None:
        """Delete a segment and its datoms (the pruner; Faust sends the tombstone)."""
        self._set(key, None)

    def apply_changelog_batch(
        self,
        batch: Iterable[EventT[Any]],
        to_key: Callable[[Any], Any],
        to_value: Callable[[Any], Any],
    ) -> None:
        """Recovery and standbys: expand each changelog segment exactly like a live write."""
        batches: dict[int, rocksdict.WriteBatch] = defaultdict(
            lambda: rocksdict.WriteBatch(raw_mode=True)
        )
        pending: dict[tuple[int, bytes], bytes | None] = {}
        offsets: dict[TP, int] = {}
        for event in batch:
            msg = event.message
            offsets[msg.tp] = max(msg.offset, offsets.get(msg.tp, -1))
            if msg.key is None:
                continue
            db, part = self._db_for_partition(msg.partition), msg.partition

            def lookup(k: bytes, db: Any = db, part: int = part) -> bytes | None:
                # a tombstone may follow its segment within this same write batch
                return pending[(part, k)] if (part, k) in pending else db.get(k)

            _expand(batches[part], msg.key, msg.value, lookup)
            pending[(part, msg.key)] = msg.value
        for partition, wb in batches.items():
            self._db_for_partition(partition).write(wb)
        for tp, offset in offsets.items():
            self.set_persisted_offset(tp, offset)


def _expand(
    batch: rocksdict.WriteBatch, key: bytes, value: bytes | None,
    get: Callable[[bytes], bytes | None], segment: Segment | None = None,
) -> None:
    if value is None:
        # A tombstone (the pruner): the segment goes, and with it its datoms.
        old = get(key) if key.startswith(SEGMENT) else None
        if old is not None:
            for k, _ in Segment.decode(old).datoms():
                batch.delete(k)
        batch.delete(key)
        return
    batch.put(key, value)
    if not key.startswith(SEGMENT):
        return
    if segment is None:
        segment = Segment.decode(value)
    for k, v in segment.datoms():
        batch.put(k, v)
    if segment.record:  # all but the last piece of a large batch carry none (``pieces``)
        batch.put(market_key(segment.market), segment.record)
