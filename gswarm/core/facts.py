"""Datoms and the byte layout that makes RocksDB's key order the EAVT index order.

A datom is (entity, attribute, value, tx, op): entity = market id, tx = (event time in ms,
seq) with ``seq = offset << 16 | index`` (partition offset, position in the message). Both
halves come from the event, never from the worker's clock, so a redelivered message rewrites
the same keys (replays are idempotent), and ticks with the same event time keep their
arrival order. (The same bet sent twice at two offsets is caught before it is written: see
:mod:`gswarm.core.ingest`.)

Keys (all integers big-endian, so byte order is numeric order)::

    F <market> 00 <attr:1> <ts:8> <seq:8>   a datom: one market's history of one attribute
                                            is one contiguous range, in time order
    S <market> 00 <ts:8> <seq:8>            a segment: the ticks of one market in one batch
    M <market>                              the market record: latest values, rolling state
    G <market> 00 <ts:8> <seq:8> <rule>     a signal fired by the tick (ts, seq): its JSON

Market ids never contain NUL (ticks validation rejects control characters), so the ``00``
separator keeps ``m-1`` and ``m-10`` apart and every prefix scan exact.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import orjson
from numpy.typing import NDArray

FACT, SEGMENT, MARKET, SIGNAL = b"F", b"S", b"M", b"G"
SEP = b"\x00"
_TX = struct.Struct(">QQ")
_F64 = struct.Struct("<d")
_U32 = struct.Struct("<I")
SEGMENT_VERSION = 1
RECORD_VERSION = 1

#: Attributes every tick writes: name -> one-byte code (order inside a market follows it).
TICK_ATTRIBUTES: dict[str, int] = {
    "tick/probability": 1,
    "tick/volume": 2,
    "tick/trader": 3,
    "tick/outcome": 4,
    "market/alpha": 5,
}
#: Market metadata from a live feed (question, close time, resolution...): written when a
#: value changes, never pruned. Values are stored as JSON (a text, a number or null).
META_ATTRIBUTES: dict[str, int] = {
    "market/question": 16,
    "market/slug": 17,
    "market/url": 18,
    "market/outcome_type": 19,
    "market/close_time": 20,
    "market/resolution": 21,
    "market/resolution_time": 22,
}
ATTRIBUTES: dict[str, int] = {**TICK_ATTRIBUTES, **META_ATTRIBUTES}
ATTRIBUTE_NAMES = {code: name for name, code in ATTRIBUTES.items()}
TICK_ATTRIBUTE_NAMES = {code: name for name, code in TICK_ATTRIBUTES.items()}
META_CODES = frozenset(META_ATTRIBUTES.values())

Tx = tuple[int, int]


def seq_for(offset: int, index: int) -> int:
    """The event-derived second half of a tx (see the module docstring)."""
    return (offset << 16) | (index & 0xFFFF)


def market_prefix(market: str) -> bytes:
    return market.encode() + SEP


def fact_key(market: str, attr: int, ts: int, seq: int) -> bytes:
    return FACT + market_prefix(market) + bytes((attr,)) + _TX.pack(ts, seq)


def attr_prefix(market: str, attr: int) -> bytes:
    return FACT + market_prefix(market) + bytes((attr,))


def segment_key(market: str, ts: int, seq: int) -> bytes:
    return SEGMENT + market_prefix(market) + _TX.pack(ts, seq)


def market_key(market: str) -> bytes:
    return MARKET + market.encode()


def signal_key(market: str, ts: int, seq: int, rule: str) -> bytes:
    return SIGNAL + market_prefix(market) + _TX.pack(ts, seq) + rule.encode()


def signal_tx_prefix(market: str, ts: int, seq: int) -> bytes:
    """The prefix of every signal key of one tick."""
    return SIGNAL + market_prefix(market) + _TX.pack(ts, seq)


def split_fact_key(key: bytes) -> tuple[str, int, int, int]:
    """(market, attr, ts, seq) of a datom key."""
    sep = key.index(SEP, 1)
    ts, seq = _TX.unpack_from(key, sep + 2)
    return key[1:sep].decode(), key[sep + 1], ts, seq


def split_segment_key(key: bytes) -> tuple[str, int, int]:
    sep = key.index(SEP, 1)
    ts, seq = _TX.unpack_from(key, sep + 1)
    return key[1:sep].decode(), ts, seq


def tx_bytes(ts: int, seq: int) -> bytes:
    return _TX.pack(ts, seq)


@dataclass(frozen=True)
class Segment:
    """The new ticks of one market in one batch, with the market record after them.

    This is the value of the one changelog message a batch writes per market; the store
    expands it into datoms and the market record.
    """

    market: str
    ts: NDArray[np.int64]
    seq: NDArray[np.uint64]
    prob: NDArray[np.float64]
    volume: NDArray[np.float64]
    trader: list[str]
    outcome: list[str]
    alpha: NDArray[np.float32]  # (n, DIM) unit vectors
    record: bytes  # the encoded market record after this segment (b"": none, see pieces)
    #: signals its ticks fired (JSON documents, :mod:`gswarm.core.signals`): stored as
    #: ``G`` keys, in the same changelog message as the record whose state follows them
    signals: list[dict[str, Any]] = field(default_factory=list)

    @property
    def key(self) -> bytes:
        return segment_key(self.market, int(self.ts[0]), int(self.seq[0]))

    def encode(self) -> bytes:
        head: dict[str, Any] = {
            "m": self.market, "n": len(self.ts), "d": int(self.alpha.shape[1]),
            "tr": self.trader, "oc": self.outcome,
        }
        if self.signals:
            head["sg"] = self.signals
        header = orjson.dumps(head)
        return b"".join((
            bytes((SEGMENT_VERSION,)), _U32.pack(len(header)), header,
            _U32.pack(len(self.record)), self.record,
            self.ts.astype("<i8").tobytes(), self.seq.astype("<u8").tobytes(),
            self.prob.astype("<f8").tobytes(), self.volume.astype("<f8").tobytes(),
            self.alpha.astype("<f4").tobytes(),
        ))

    @classmethod
    def decode(cls, data: bytes) -> Segment:
        if not data or data[0] != SEGMENT_VERSION:
            raise ValueError(f"unknown segment format {data[:1]!r}")
        pos = 1
        (hlen,) = _U32.unpack_from(data, pos)
        header = orjson.loads(data[pos + 4: pos + 4 + hlen])
        pos += 4 + hlen
        (rlen,) = _U32.unpack_from(data, pos)
        record = data[pos + 4: pos + 4 + rlen]
        pos += 4 + rlen
        n, dim = header["n"], header["d"]

        def take(dtype: str, count: int) -> NDArray[Any]:
            nonlocal pos
            arr = np.frombuffer(data, dtype=dtype, count=count, offset=pos)
            pos += arr.nbytes
            return arr

        ts, seq = take("<i8", n), take("<u8", n)
        prob, vol = take("<f8", n), take("<f8", n)
        alpha = take("<f4", n * dim).reshape(n, dim)
        return cls(header["m"], ts, seq, prob, vol, header["tr"], header["oc"], alpha, record,
                   header.get("sg", []))

    def datoms(self) -> list[tuple[bytes, bytes]]:
        """(key, value) of every datom in the segment.

        Probabilities, volumes and alpha vectors are packed for the whole segment at once
        and sliced per tick: the same bytes as packing each value on its own (``_F64``),
        at about half the cost (this was 10 % of the main thread at full load, py-spy
        2026-11-29).
        """
        out: list[tuple[bytes, bytes]] = []
        prefix = FACT + market_prefix(self.market)
        codes = TICK_ATTRIBUTES
        p_prob = prefix + bytes((codes["tick/probability"],))
        p_vol = prefix + bytes((codes["tick/volume"],))
        p_tr = prefix + bytes((codes["tick/trader"],))
        p_oc = prefix + bytes((codes["tick/outcome"],))
        p_al = prefix + bytes((codes["market/alpha"],))
        probs = np.asarray(self.prob, dtype="<f8").tobytes()
        vols = np.asarray(self.volume, dtype="<f8").tobytes()
        alphas = np.ascontiguousarray(self.alpha, dtype="<f4").tobytes()
        width = len(alphas) // len(self.ts) if len(self.ts) else 0
        append = out.append
        pack = _TX.pack
        for i, (ts, seq, trader, outcome) in enumerate(zip(
                self.ts.tolist(), self.seq.tolist(), self.trader, self.outcome, strict=True)):
            t = pack(ts, seq)
            append((p_prob + t, probs[8 * i:8 * i + 8]))
            append((p_vol + t, vols[8 * i:8 * i + 8]))
            append((p_tr + t, trader.encode()))
            append((p_oc + t, outcome.encode()))
            append((p_al + t, alphas[width * i:width * i + width]))
        for sig in self.signals:
            out.append((signal_key(self.market, sig["ts"], sig["seq"], sig["rule"]),
                        orjson.dumps(sig)))
        return out


def decode_value(attr: int, value: bytes) -> Any:
    """The Python value of a datom's stored bytes."""
    name = ATTRIBUTE_NAMES[attr]
    if attr in META_CODES:
        return orjson.loads(value)
    if name in ("tick/probability", "tick/volume"):
        return _F64.unpack(value)[0]
    if name == "market/alpha":
        return np.frombuffer(value, dtype="<f4").tolist()
    return value.decode()


def segment_prefix(market: str) -> bytes:
    """The key prefix of every segment of ``market``."""
    return SEGMENT + market_prefix(market)


def holders(segment_keys: Iterable[bytes], seqs: Iterable[int]) -> dict[bytes, list[int]]:
    """For each of ``seqs``, the one segment of a market that can hold it; by segment key.

    A market's segments are written in offset order, each starting at its first tick's seq
    and holding only ticks after the previous one's: a tick can only be in the segment with
    the greatest first seq at or before its own (whether it is there is for the segment to
    say: a duplicate bet never was, a pruned segment is gone). ``segment_keys`` are one
    market's (any order).
    """
    starts = sorted((split_segment_key(key)[2], key) for key in segment_keys)
    firsts = [seq for seq, _ in starts]
    found: dict[bytes, list[int]] = {}
    for seq in seqs:
        i = bisect.bisect_right(firsts, seq) - 1
        if i >= 0:
            found.setdefault(starts[i][1], []).append(seq)
    return found


#: Ticks in one segment at most. A segment is one changelog message, and Kafka refuses a
#: message over ~1 MB (``max.request.size``, ``max.message.bytes``); a tick takes ~150-300
#: bytes of a segment, and a backlog read at once gave a busy market 5,000+ ticks per batch.
MAX_SEGMENT_TICKS = 2000


def pieces(segment: Segment, most: int = MAX_SEGMENT_TICKS) -> list[Segment]:
    """``segment`` as segments of at most ``most`` ticks, in order; only the last carries
    the market record (the others carry none: ``record`` is empty).

    A record claims every tick up to its last offset as applied (a recovery takes the
    last record it reads and skips redelivered offsets up to it). If every piece carried
    the batch's final record, a worker killed after its first piece reached the changelog
    but before the rest did would leave a changelog whose record claims ticks it does not
    hold, and a worker recovering from it would skip them. A piece without a record
    claims nothing: from such a changelog the market's last record is the one before the
    batch, the batch's offsets (never committed: offsets wait for the changelog's acks)
    are processed again from there, and the same ticks make the same first pieces under
    the same keys.
    """
    n = len(segment.ts)
    if n <= most:
        return [segment]
    out = []
    for i in range(0, n, most):
        seq = segment.seq[i:i + most]
        first, last = int(seq[0]), int(seq[-1])
        out.append(Segment(
            market=segment.market, ts=segment.ts[i:i + most], seq=seq,
            prob=segment.prob[i:i + most], volume=segment.volume[i:i + most],
            trader=segment.trader[i:i + most], outcome=segment.outcome[i:i + most],
            alpha=segment.alpha[i:i + most], record=segment.record if i + most >= n else b"",
            # each signal goes with the piece holding the tick that fired it
            signals=[g for g in segment.signals if first <= g["seq"] <= last],
        ))
    return out


class KeyCursor(Protocol):
    """A cursor over a sorted key space (RocksDB's iterator: ``rocksdict.RdictIter``)."""

    def seek(self, key: bytes) -> None: ...
    def seek_for_prev(self, key: bytes) -> None: ...
    def valid(self) -> bool: ...
    def key(self) -> Any: ...
    def next(self) -> None: ...


def plan_prune_seeking(cursor: KeyCursor, retention_ms: int) -> list[bytes]:
    """:func:`plan_prune` of every segment key under ``cursor``, reading only what it must.

    Two seeks per market find its newest segment key (keys sort by market, then time), and
    so the partition's newest time; then each market's segments are read from its oldest
    only while they fall out of the window. A scan of every segment key made a prune cost
    O(segments): with the default hour of history that is millions of keys per partition,
    read in the ingest's batch every ``prune_interval_s`` (a 0.5-0.9 s stall of the ingest
    after a minute at 1,000 ticks/s already, 2026-11-29). This costs O(markets + pruned).
    """
    newest: list[tuple[bytes, bytes]] = []  # (market prefix with SEP, its newest key)
    cursor.seek(SEGMENT)
    while cursor.valid():
        key: bytes = cursor.key()
        if not key.startswith(SEGMENT):
            break
        sep = key.index(SEP, 1)
        past = key[:sep] + b"\x01"  # after every key of this market (ids hold no NUL)
        cursor.seek_for_prev(past)
        newest.append((key[:sep + 1], cursor.key()))
        cursor.seek(past)
    if not newest:
        return []
    cutoff = max(_TX.unpack_from(last, len(prefix))[0] for prefix, last in newest) - retention_ms
    doomed = []
    for prefix, last in newest:
        cursor.seek(prefix)
        while cursor.valid():
            key = cursor.key()
            if key == last or _TX.unpack_from(key, len(prefix))[0] >= cutoff:
                break
            doomed.append(key)
            cursor.next()
    return doomed


def plan_prune(segment_keys: Iterable[bytes], retention_ms: int) -> list[bytes]:
    """Segment keys (of one partition, in key order) that fall out of the window.

    The window ends at the newest segment time in the partition; a segment is older when
    its first tick is more than ``retention_ms`` before that. A market's newest segment is
    always kept: it carries the market's latest values and record.

    The definition, over every key: the pruner plans with :func:`plan_prune_seeking`,
    which is tested to give the same keys.
    """
    by_market: dict[str, list[tuple[int, bytes]]] = {}
    newest = -1
    for key in segment_keys:
        market, ts, _ = split_segment_key(key)
        by_market.setdefault(market, []).append((ts, key))
        newest = max(newest, ts)
    cutoff = newest - retention_ms
    doomed = []
    for entries in by_market.values():
        doomed += [key for ts, key in entries[:-1] if ts < cutoff]
    return doomed
