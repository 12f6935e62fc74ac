"""RocksDB for a worker's tables: one block cache and one memtable budget for all of them.

Faust opens one RocksDB database per table partition (16 for a lean worker with 8
partitions and two tables) and gives each its own block cache and write buffers, so
memory grows with partitions and with every database's memtables filling up (a lean
worker's RSS rose from 98 to 233 MB over two minutes of ingest). Here every database of
the process shares one LRU block cache, and their memtables are charged to that same cache
through one write-buffer manager, so RocksDB's memory has a single bound
(``GSWARM_ROCKSDB_MEMORY_MB``).

It plugs in where Faust lets a table choose its store (``Table._new_store_by_url``, see
:mod:`gswarm.stream.tables`): :class:`SharedStore` is Faust's RocksDB store whose
``rocksdb_options`` build the shared options. Everything else (paths, recovery, offsets,
changelogs) is Faust's, with one change to what a rebalance costs:

* ``revoke_partitions``: Faust's drops the databases of the revoked partitions and then
  runs a full garbage collection (so a dropped database's handle, and its lock, is freed
  before the partition may be opened again), on every rebalance, for every table, even when
  nothing was revoked -- as on a survivor that only gains partitions after a failover.
  With a worker's heap that is 0.1-0.4 s of the event loop per table, in the middle of the
  failover. Here it runs (Faust's own code) only when a database is actually dropped.
"""

from __future__ import annotations

from typing import Any

import rocksdict
from faust.stores.rocksdb import RocksDBOptions
from faust.stores.rocksdb import Store as RocksDBStore
from faust.types import TP, CollectionT


class SharedMemory:
    """One block cache; memtables (up to half of it) are charged to it."""

    def __init__(self, total_bytes: int) -> None:
        self.cache = rocksdict.Cache(total_bytes)
        self.write_buffers = rocksdict.WriteBufferManager.new_write_buffer_manager_with_cache(
            total_bytes // 2, False, self.cache)


_memory: dict[int, SharedMemory] = {}


def shared_memory(total_bytes: int) -> SharedMemory:
    """The process's shared memory for ``total_bytes`` (one per size, made on first use)."""
    if total_bytes not in _memory:
        _memory[total_bytes] = SharedMemory(total_bytes)
    return _memory[total_bytes]


class SharedOptions(RocksDBOptions):
    """Faust's RocksDB options (rocksdict), with the block cache and memtables shared."""

    def __init__(self, memory: SharedMemory, **options: Any) -> None:
        super().__init__(**options)
        self.memory = memory

    def as_options(self) -> Any:
        opts = rocksdict.Options(raw_mode=True)
        opts.create_if_missing(True)
        opts.set_max_open_files(self.max_open_files or -1)  # -1: no limit
        opts.set_write_buffer_size(self.write_buffer_size)
        opts.set_target_file_size_base(self.target_file_size_base)
        opts.set_max_write_buffer_number(self.max_write_buffer_number)
        opts.set_write_buffer_manager(self.memory.write_buffers)
        table = rocksdict.BlockBasedOptions()
        table.set_bloom_filter(self.bloom_filter_size, block_based=True)
        table.set_block_cache(self.memory.cache)
        # index and filter blocks (they grow with the data on disk) in the same cache, not
        # held beside it by every open table file
        table.set_cache_index_and_filter_blocks(True)
        table.set_pin_l0_filter_and_index_blocks_in_cache(True)
        table.set_index_type(rocksdict.BlockBasedIndexType.binary_search())
        opts.set_block_based_table_factory(table)
        return opts


class SharedStore(RocksDBStore):
    """Faust's RocksDB store whose databases share one :class:`SharedMemory`.

    The table's ``options`` carry ``memory_bytes`` (the budget) besides Faust's own.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        options = dict(self.options or {})
        memory = shared_memory(int(options.pop("memory_bytes")))
        self.rocksdb_options = SharedOptions(memory, **options, use_rocksdict=True)

    def revoke_partitions(self, table: CollectionT, tps: set[TP]) -> None:
        """Faust's revoke (drop the databases, then collect garbage), only when one of
        ``tps`` has a database open here: otherwise there is nothing to drop or free."""
        topics = table.changelog_topic.topics
        if any(tp.topic in topics and tp.partition in self._dbs for tp in tps):
            super().revoke_partitions(table, tps)
