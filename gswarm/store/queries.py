"""Queries over a worker's fact databases: range scans on EAVT-ordered keys.

Every function takes rocksdict databases (one per partition the worker holds) and reads
them directly: history and as-of are seeks plus short forward/backward scans, never a copy
of the table in Python. Arguments are checked here so every caller (web, CLI, tests) gets
the same :class:`~gswarm.errors.QueryError` for bad input.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from gswarm.core import alpha
from gswarm.core.facts import (
    ATTRIBUTE_NAMES,
    ATTRIBUTES,
    MARKET,
    META_ATTRIBUTES,
    attr_prefix,
    decode_value,
    market_key,
    split_fact_key,
    tx_bytes,
)
from gswarm.core.ingest import MarketRecord
from gswarm.errors import NotFoundError, QueryError

MAX_TS = 2**63 - 1
MAX_SEQ = 2**64 - 1
MAX_LIMIT = 10_000

Db = Any  # a rocksdict.Rdict opened in raw mode


def check_market(market: str) -> str:
    if not market or len(market) > 200 or any(ord(c) < 32 for c in market):
        raise QueryError(f"malformed market id {market[:50]!r}")
    return market


def check_attr(attr: str) -> int:
    try:
        return ATTRIBUTES[attr]
    except KeyError:
        raise QueryError(f"unknown attribute {attr!r}; one of {sorted(ATTRIBUTES)}") from None


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise QueryError(f"limit must be in [1, {MAX_LIMIT}], got {limit}")
    return limit


def record(dbs: Iterable[Db], market: str) -> MarketRecord:
    """The market's record (latest values, rolling state) or :class:`NotFoundError`."""
    key = market_key(check_market(market))
    for db in dbs:
        raw = db.get(key)
        if raw is not None:
            return MarketRecord.decode(raw)
    raise NotFoundError(f"unknown market {market!r}")


def check_known(dbs: Iterable[Db], market: str) -> None:
    """:class:`NotFoundError` unless the market has ticks or metadata."""
    dbs = list(dbs)
    try:
        record(dbs, market)
    except NotFoundError:
        if not metadata(dbs, market):
            raise


def latest(dbs: Iterable[Db], market: str) -> dict[str, Any]:
    """Latest state of a market: its newest tick by event time, its current alpha, and its
    metadata (``meta``: latest value of each ``market/*`` attribute a feed sent).

    A market known only by its metadata (no tick yet) answers with ``ticks`` 0.
    """
    dbs = list(dbs)
    meta = metadata(dbs, market)
    try:
        rec = record(dbs, market)
    except NotFoundError:
        if not meta:
            raise
        return {"market": market, "ticks": 0, "meta": meta}
    return {**rec.latest, "ticks": rec.n, "meta": meta}


def metadata(dbs: Iterable[Db], market: str) -> dict[str, Any]:
    """The latest value of each metadata attribute stored for ``market``."""
    market = check_market(market)
    out: dict[str, Any] = {}
    for db in dbs:
        for name, code in META_ATTRIBUTES.items():
            found = last_datom(db, market, code)
            if found is not None:
                out[name] = decode_value(code, found[1])
    return out


def _scan(db: Db, start: bytes, stop: bytes) -> Iterator[tuple[bytes, bytes]]:
    it = db.iter()
    it.seek(start)
    while it.valid():
        key = it.key()
        if key > stop:
            return
        yield key, it.value()
        it.next()


def series(
    db: Db, market: str, attr: str = "tick/probability",
    start: int = 0, end: int = MAX_TS, limit: int = 1000, after_seq: int | None = None,
) -> list[dict[str, Any]]:
    """Datoms of one attribute with ``start <= ts <= end``, in time order (at most limit).

    Pages: pass the last point's ``ts`` as ``start`` and its ``seq`` as ``after_seq``.
    """
    code, market = check_attr(attr), check_market(market)
    check_limit(limit)
    if not 0 <= start <= MAX_TS or not 0 <= end <= MAX_TS:
        raise QueryError("from and to must be in [0, 2**63)")
    if start > end:
        raise QueryError(f"from ({start}) is after to ({end})")
    if after_seq is not None and not 0 <= after_seq < MAX_SEQ:
        raise QueryError("after_seq out of range")
    first = 0 if after_seq is None else after_seq + 1
    prefix = attr_prefix(market, code)
    out = []
    for key, value in _scan(db, prefix + tx_bytes(start, first), prefix + tx_bytes(end, MAX_SEQ)):
        _, _, ts, seq = split_fact_key(key)
        out.append({"ts": ts, "seq": seq, "value": decode_value(code, value)})
        if len(out) >= limit:
            break
    return out


def asof(db: Db, market: str, attr: str, t: int) -> dict[str, Any] | None:
    """The value of ``attr`` at time ``t``: the last datom with ``ts <= t`` (or None)."""
    code, market = check_attr(attr), check_market(market)
    if not 0 <= t <= MAX_TS:
        raise QueryError("t must be in [0, 2**63)")
    found = last_datom(db, market, code, t)
    if found is None:
        return None
    _, _, ts, seq = split_fact_key(found[0])
    return {"ts": ts, "seq": seq, "value": decode_value(code, found[1])}


def last_datom(db: Db, market: str, code: int, t: int = MAX_TS) -> tuple[bytes, bytes] | None:
    """(key, stored bytes) of the market's last datom of attribute ``code`` with ts <= t."""
    prefix = attr_prefix(market, code)
    it = db.iter()
    it.seek_for_prev(prefix + tx_bytes(t, MAX_SEQ))
    if not it.valid() or not it.key().startswith(prefix):
        return None
    return it.key(), it.value()


def since(db: Db, market: str, ts: int, seq: int = MAX_SEQ, limit: int = 1000) -> list[
    dict[str, Any]
]:
    """Every datom of a market with tx after ``(ts, seq)``, as (e, a, v, tx) in tx order."""
    market = check_market(market)
    check_limit(limit)
    if not 0 <= ts <= MAX_TS or not 0 <= seq <= MAX_SEQ:
        raise QueryError("ts/seq out of range")
    out = []
    for code, name in ATTRIBUTE_NAMES.items():
        prefix = attr_prefix(market, code)
        for key, value in _scan(db, prefix + tx_bytes(ts, seq), prefix + tx_bytes(MAX_TS,
                                                                                  MAX_SEQ)):
            _, _, kts, kseq = split_fact_key(key)
            if (kts, kseq) == (ts, seq):
                continue
            out.append({"e": market, "a": name, "v": decode_value(code, value),
                        "tx": [kts, kseq]})
    out.sort(key=lambda d: (d["tx"], d["a"]))
    return out[:limit]


def markets(dbs: Iterable[Db]) -> Iterator[MarketRecord]:
    """Every market record in ``dbs``."""
    for db in dbs:
        for _, value in _scan(db, MARKET, MARKET + b"\xff"):
            yield MarketRecord.decode(value)


def search(dbs: Iterable[Db], prefix: str, limit: int = 100) -> list[str]:
    """Market ids starting with ``prefix``, sorted."""
    check_limit(limit)
    if len(prefix) > 200 or any(ord(c) < 32 for c in prefix):
        raise QueryError("malformed prefix")
    start = MARKET + prefix.encode()
    found: list[str] = []
    for db in dbs:
        for key, _ in _scan(db, start, start + b"\xff" * 8):
            if not key.startswith(start):
                break
            found.append(key[1:].decode())
    return sorted(found)[:limit]


def _unit_alpha(rec: MarketRecord) -> np.ndarray[Any, Any]:
    raw = np.array([[rec.latest["alpha"][c] for c in alpha.COMPONENTS]], dtype=np.float64)
    vec: np.ndarray[Any, Any] = alpha.embed(raw)[0].astype(np.float64)
    return vec


def target_vector(dbs: Iterable[Db], market: str) -> list[float]:
    """The stored (embedded, unit) alpha vector of ``market``."""
    return _unit_alpha(record(dbs, market)).tolist()  # type: ignore[no-any-return]


def similar(
    dbs: Iterable[Db], *, market: str | None = None, vector: list[float] | None = None,
    k: int = 10, min_score: float = -1.0, exclude: str | None = None,
) -> list[dict[str, Any]]:
    """Top-k markets by cosine similarity of their current alpha vectors (>= min_score)."""
    if not 1 <= k <= 1000:
        raise QueryError(f"k must be in [1, 1000], got {k}")
    if not -1.0 <= min_score <= 1.0:
        raise QueryError(f"min must be in [-1, 1], got {min_score}")
    dbs = list(dbs)
    if (market is None) == (vector is None):
        raise QueryError("give exactly one of a market or a vector")
    if market is not None:
        target = _unit_alpha(record(dbs, market))
    else:
        assert vector is not None
        if len(vector) != alpha.DIM or not np.all(np.isfinite(vector)):
            raise QueryError(f"vector must have {alpha.DIM} finite components")
        # a given vector is compared as given (in the stored, embedded form)
        target = alpha.unit(np.array([vector], dtype=np.float64))[0].astype(np.float64)
    ids, rows = [], []
    for rec in markets(dbs):
        if rec.market not in (market, exclude):
            ids.append(rec.market)
            rows.append(_unit_alpha(rec))
    if not rows:
        return []
    scores = np.vstack(rows) @ target
    order = np.lexsort((np.array(ids), -scores))
    return [
        {"market": ids[i], "score": float(scores[i])}
        for i in order[:k] if scores[i] >= min_score
    ]


_OPS: dict[str, Callable[[float, float], bool]] = {
    "gt": operator.gt, "ge": operator.ge, "lt": operator.lt, "le": operator.le,
}


def screen(
    dbs: Iterable[Db], component: str, op: str, value: float, limit: int = 100
) -> list[dict[str, Any]]:
    """Markets whose current alpha ``component`` compares ``op`` (gt/ge/lt/le) to ``value``."""
    if component not in alpha.INDEX:
        raise QueryError(f"unknown component {component!r}; one of {list(alpha.COMPONENTS)}")
    if op not in _OPS:
        raise QueryError(f"op must be one of {sorted(_OPS)}")
    check_limit(limit)
    cmp = _OPS[op]
    hits = [
        {"market": rec.market, component: rec.latest["alpha"][component]}
        for rec in markets(dbs) if cmp(rec.latest["alpha"][component], value)
    ]
    hits.sort(key=lambda h: (-h[component] if op in ("gt", "ge") else h[component],
                             h["market"]))
    return hits[:limit]
