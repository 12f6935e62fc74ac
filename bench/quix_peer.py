"""The peer: Gswarm's per-tick work as an idiomatic Quix Streams application.

Benchmark code, not part of the product. It consumes the same tick topic and does the
same work per tick as a Gswarm worker, in Quix's model (one message at a time, state
scoped to the message key, state and offsets committed together at each checkpoint):

* the same validation (:func:`gswarm.core.ticks.decode`, the murmur2 partition check);
  rejected items go to a dead-letter topic through ``to_topic``;
* the same facts: the market record and alpha vector (:func:`apply_ticks`, once per
  message, so an array message is applied as one group as in Gswarm) and every EAVT
  datom written to Quix's RocksDB state, key by key;
* the same sketches (:class:`PartitionSketches`, applied per message in partition order,
  which gives the same bytes as Gswarm's batches) written to a partition-scoped state key
  on every message, because Quix has no hook before a checkpoint and a value that is not
  in the transaction is not in the changelog.

``--sketch-persist never`` keeps the sketches in memory only: not crash-safe, reported
as the peer's upper bound. When ``--expect`` items are processed, it writes a summary
(timings, per-market latest state, per-partition sketch digests) to ``--out`` and stops.

Run: ``python bench/quix_peer.py --broker HOST:PORT --topic T --expect N --out F``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from collections import defaultdict
from functools import lru_cache
from pathlib import Path
from typing import Any

from aiokafka.partitioner import murmur2
from quixstreams import Application, message_context
from quixstreams.state import State

from gswarm.core.ingest import Arrival, MarketRecord, apply_ticks
from gswarm.core.sketches.state import CountedTick, PartitionSketches
from gswarm.core.ticks import Tick, decode

RECORD = b"\x00record"
SKETCH_PREFIX = b"\x00partition"
SKETCH = b"sketch"


@lru_cache(maxsize=500_000)
def expected_partition(key: bytes, partitions: int) -> int:
    """The partition murmur2 (Kafka's default partitioner) gives ``key``."""
    return int((murmur2(key) & 0x7FFFFFFF) % partitions)


class Peer:
    """The per-message work, with what the summary needs."""

    def __init__(self, sdf: Any, partitions: int, max_bytes: int, persist: bool,
                 expect: int, app: Application) -> None:
        self.sdf = sdf
        self.partitions = partitions
        self.max_bytes = max_bytes
        self.persist = persist
        self.expect = expect
        self.app = app
        self.sketches: dict[int, PartitionSketches] = defaultdict(PartitionSketches)
        self.latest: dict[str, dict[str, Any]] = {}
        self.seen: set[tuple[int, int]] = set()  # (partition, offset) of messages processed
        self.items = self.ticks = self.datoms = self.dead = 0
        self.first: float | None = None
        self.last = self.first_cpu = self.last_cpu = 0.0

    def process(self, value: bytes, key: bytes, timestamp: int, headers: Any,
                state: State[Any, Any]) -> list[dict[str, Any]]:
        """One message: validate, apply to the market's state, sketch; return dead letters."""
        if self.first is None:
            self.first, self.first_cpu = time.time(), time.process_time()
        ctx = message_context()
        letters: list[dict[str, Any]] = []
        # A message delivered again (Quix redelivers after a rebalance, e.g. at start) is
        # processed again, as Gswarm does, but counts once: the end is detected by distinct
        # messages, else the peer stopped up to a few messages short of the topic's end.
        first_time = (ctx.partition, ctx.offset) not in self.seen
        self.seen.add((ctx.partition, ctx.offset))
        items_before = self.items
        if key is not None and ctx.partition != expected_partition(key, self.partitions):
            letters.append({"reason": "wrong_partition", "offset": ctx.offset})
            good: list[tuple[int, Tick]] = []
            self.items += 1
        else:
            good, bad = decode(value, key, self.max_bytes)
            self.items += len(good) + len(bad)
            letters += [{"reason": r.reason, "detail": r.detail, "offset": ctx.offset}
                        for r in bad]
        if good:
            market = good[0][1].market
            raw = state.get_bytes(RECORD)
            record = MarketRecord.decode(raw) if raw is not None else None
            arrivals = [Arrival(ctx.offset, i, t) for i, t in good]
            applied = apply_ticks(record, market, arrivals)
            segment = applied.segment
            if segment is not None:
                for k, v in segment.datoms():
                    state.set_bytes(k, v)
                    self.datoms += 1
                state.set_bytes(RECORD, segment.record)
                self.ticks += len(segment.ts)
            self.latest[market] = {**applied.record.latest, "ticks": applied.record.n}
            sketch = self.sketches[ctx.partition]
            sketch.apply([CountedTick(a.offset, a.index, market, a.tick.trader, a.tick.ts)
                          for a in applied.counted])
            if self.persist:
                tx = self.sdf.processing_context.checkpoint.get_store_transaction(
                    stream_id=self.sdf.stream_id, partition=ctx.partition)
                tx.as_state(prefix=SKETCH_PREFIX).set_bytes(SKETCH, sketch.to_bytes())
        if not first_time:
            self.items = items_before
        self.dead += len(letters)
        self.last, self.last_cpu = time.time(), time.process_time()
        if self.items >= self.expect:
            self.app.stop()
        return letters

    def summary(self) -> dict[str, Any]:
        return {
            "items": self.items, "ticks": self.ticks, "datoms": self.datoms,
            "dead_letters": self.dead, "first_time": self.first, "last_time": self.last,
            "first_cpu": self.first_cpu, "last_cpu": self.last_cpu,
            "latest": self.latest,
            "sketches": {str(p): {"sha256": hashlib.sha256(s.to_bytes()).hexdigest(),
                                  "ticks": s.ticks, "last_offset": s.last_offset}
                         for p, s in sorted(self.sketches.items())},
        }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--broker", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--deadletters", default="quix-deadletters")
    p.add_argument("--group", default="quix-peer")
    p.add_argument("--partitions", type=int, required=True)
    p.add_argument("--expect", type=int, required=True, help="items to process, then stop")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--state-dir", type=Path, required=True)
    p.add_argument("--commit-interval", type=float, default=1.0)
    p.add_argument("--max-bytes", type=int, default=1_000_000)
    p.add_argument("--sketch-persist", choices=("every", "never"), default="every")
    args = p.parse_args(argv)

    app = Application(
        broker_address=args.broker, consumer_group=args.group,
        auto_offset_reset="earliest", state_dir=args.state_dir,
        commit_interval=args.commit_interval, loglevel="WARNING",
        processing_guarantee="at-least-once",
    )
    ticks = app.topic(args.topic, key_deserializer="bytes", value_deserializer="bytes")
    deadletters = app.topic(args.deadletters, value_serializer="json",
                            key_serializer="bytes")
    sdf = app.dataframe(ticks)
    peer = Peer(sdf, args.partitions, args.max_bytes, args.sketch_persist == "every",
                args.expect, app)
    letters = sdf.apply(peer.process, stateful=True, metadata=True, expand=True)
    letters.to_topic(deadletters)
    app.run()
    args.out.write_text(json.dumps({**peer.summary(), "pid": os.getpid()}))


if __name__ == "__main__":
    main()
