"""The worker's in-memory alpha vectors, one index per partition it owns.

Like the sketches (:class:`~gswarm.stream.pipeline.SketchCache`), the state is kept in
memory and dropped on every rebalance: a partition's :class:`~gswarm.core.vectors.
PartitionIndex` is rebuilt from its stored market records (which recovery has brought up
to date) the first time the ingest or a query needs it, then the ingest batch upserts the
markets it changed. The rebuild reads the records in chunks and yields to the event loop
between them (a million markets take seconds: the worker must keep heartbeating and
ingesting meanwhile); the ingest upserts into the index being built, and the rebuild only
adds markets it does not hold yet, so a newer value is never replaced by an older one.

The ingest's upserts are deferred: a batch only notes each market's newest raw vector
(:meth:`VectorCache.upsert`, a dict set), and the index encodes what is pending in one
whole-matrix step when a query asks for it (:meth:`VectorCache.ready`) or once
:data:`PENDING_ROWS` markets wait. Encoding a few rows costs as many numpy calls as
encoding thousands: at 1,000 ticks/s, with batches of ~20 ticks over every partition,
encoding at each batch took 11 % of the main thread (py-spy, 2026-11-29). A query still
sees every market the ingest wrote before it: the pending rows are applied first.

An index keeps no exact raw components (see :mod:`gswarm.core.vectors`): the few a screen
needs exactly are read back from the partition's market records (:func:`exact_vectors`),
which the ingest writes in the same synchronous step as it upserts, so the two agree
whenever a query runs.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from gswarm.core import alpha
from gswarm.core.facts import MARKET, market_key
from gswarm.core.ingest import latest_alpha
from gswarm.core.vectors import F64, PartitionIndex

log = logging.getLogger(__name__)

_CHUNK = 4096  # records read between two yields to the event loop
#: markets whose vectors wait for the index before an upsert encodes them without a query
PENDING_ROWS = 4096


class Rebalanced(Exception):
    """A partition's index was dropped (a rebalance) while a query waited for it."""


class VectorCache:
    """Per-partition vector indexes of the ``facts`` table's market records."""

    def __init__(self, facts: Any) -> None:
        self.facts = facts
        self.parts: dict[int, PartitionIndex] = {}
        self.builds: dict[int, asyncio.Task[None]] = {}
        #: partition -> market -> its newest raw vector, not in the index yet
        self.pending: dict[int, dict[str, F64]] = {}

    def upsert(self, partition: int, markets: Sequence[str], raw: Iterable[F64]) -> None:
        """The ingest wrote these markets' records: their current raw alpha vectors (one
        row each). Applied to the index by :meth:`flush`."""
        self._index(partition)  # a partition new to this worker starts its rebuild now
        self.pending.setdefault(partition, {}).update(zip(markets, raw, strict=True))
        if self.pending_rows >= PENDING_ROWS:
            self.flush()

    @property
    def pending_rows(self) -> int:
        """Markets whose vectors wait for the index."""
        return sum(map(len, self.pending.values()))

    def flush(self) -> None:
        """Apply the pending upserts to the indexes (each partition's in one step)."""
        pending, self.pending = self.pending, {}
        for partition, rows in pending.items():
            self._index(partition).upsert(list(rows), np.vstack(list(rows.values())))

    def markets(self) -> int:
        """Markets held by the indexes of this worker's partitions."""
        self.flush()
        return sum(len(p) for p in self.parts.values())

    async def ready(self, partitions: Iterable[int]) -> list[PartitionIndex]:
        """The complete indexes of ``partitions`` (waits for rebuilds under way), with
        every pending upsert applied."""
        out = []
        for partition in partitions:
            index = self._index(partition)
            build = self.builds.get(partition)
            if build is not None:
                await asyncio.wait([build])  # a client going away does not cancel it
                if build.cancelled() or self.parts.get(partition) is not index:
                    raise Rebalanced(f"partition {partition} moved while its vectors were "
                                     "being rebuilt; retry shortly")
                failed = build.exception()
                if failed is not None:
                    raise failed
            out.append(index)
        self.flush()  # last: also what the ingest wrote while a rebuild was awaited
        return out

    def forget(self) -> None:
        """A rebalance: drop every index (rebuilt from the records when next needed; the
        pending vectors are in those records already)."""
        for build in self.builds.values():
            build.cancel()
        self.builds.clear()
        self.parts.clear()
        self.pending.clear()

    def nbytes(self) -> int:
        self.flush()
        return sum(p.nbytes for p in self.parts.values())

    def _index(self, partition: int) -> PartitionIndex:
        index = self.parts.get(partition)
        if index is None:
            index = self.parts[partition] = PartitionIndex(
                functools.partial(self._exact, partition))
            task = asyncio.ensure_future(self._build(partition, index))
            self.builds[partition] = task
            task.add_done_callback(functools.partial(self._built, partition, index))
        return index

    def _exact(self, partition: int, markets: Sequence[str]) -> F64:
        return exact_vectors(self.facts.data.db(partition), markets)

    def _built(self, partition: int, index: PartitionIndex, task: asyncio.Task[None]) -> None:
        if self.builds.get(partition) is task:
            del self.builds[partition]
        if task.cancelled() or task.exception() is None:
            return
        log.error("vectors: rebuilding partition %d failed", partition,
                  exc_info=task.exception())
        if self.parts.get(partition) is index:
            del self.parts[partition]  # the next use starts again

    async def _build(self, partition: int, index: PartitionIndex) -> None:
        started = time.perf_counter()
        records = market_records(self.facts.data.db(partition))
        while chunk := list(itertools.islice(records, _CHUNK)):
            ids, raw = latest_vectors(chunk)
            index.fill(ids, raw)
            await asyncio.sleep(0)
        index.rank()
        log.info("vectors: partition %d rebuilt from %d market records in %.2f s",
                 partition, len(index), time.perf_counter() - started)


def market_records(db: Any) -> Iterator[tuple[bytes, bytes]]:
    """(key, record) of every market record of a partition database, in key order."""
    return itertools.takewhile(lambda kv: kv[0].startswith(MARKET), db.items(from_key=MARKET))


def latest_vectors(records: Iterable[tuple[bytes, bytes]]) -> tuple[list[str], F64]:
    """The market ids and raw current alpha vectors (one row each) of (key, record) pairs;
    records without a tick are left out."""
    ids: list[str] = []
    blobs: list[bytes] = []
    for key, value in records:
        found = latest_alpha(value)
        if found is not None:
            ids.append(key[len(MARKET):].decode())
            blobs.append(bytes(found))
    raw = np.frombuffer(b"".join(blobs), dtype="<f8").reshape(-1, alpha.DIM)
    return ids, raw


def exact_vectors(db: Any, markets: Sequence[str]) -> F64:
    """The raw current alpha vectors (one row each) of ``markets``' records in ``db``."""
    blobs: list[bytes] = []
    for market in markets:
        value = db.get(market_key(market))
        found = latest_alpha(value) if value is not None else None
        if found is None:
            raise LookupError(f"market {market!r} is in the vector index but its record "
                              "holds no alpha vector")
        blobs.append(bytes(found))
    return np.frombuffer(b"".join(blobs), dtype="<f8").reshape(-1, alpha.DIM)
