"""Queries over a worker's fact databases (range scans on EAVT-ordered keys) and over its
in-memory alpha vectors (similar markets, screens).

Most functions take rocksdict databases (one per partition the worker holds) and read them
directly: history and as-of are seeks plus short forward/backward scans, never a copy of
the table in Python. Similarity and screens take the worker's
:class:`~gswarm.core.vectors.PartitionIndex` objects instead; :func:`similar_scan` and
:func:`screen_scan` answer the same questions by reading every market record (the
reference the index is tested against). Arguments are checked here so every caller (web,
CLI, tests) gets the same :class:`~gswarm.errors.QueryError` for bad input.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import orjson

from gswarm.core import alpha, vectors
from gswarm.core.facts import (
    ATTRIBUTE_NAMES,
    ATTRIBUTES,
    MARKET,
    META_ATTRIBUTES,
    SIGNAL,
    attr_prefix,
    decode_value,
    market_key,
    market_prefix,
    split_fact_key,
    tx_bytes,
)
from gswarm.core.ingest import MarketRecord
from gswarm.core.vectors import Condition, PartitionIndex, Screen
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


def _unit_alpha(rec: MarketRecord) -> vectors.F32:
    raw = np.array([[rec.latest["alpha"][c] for c in alpha.COMPONENTS]], dtype=np.float64)
    vector: vectors.F32 = alpha.embed(raw)[0]
    return vector


def check_k(k: int, min_score: float) -> None:
    if not 1 <= k <= 1000:
        raise QueryError(f"k must be in [1, 1000], got {k}")
    if not -1.0 <= min_score <= 1.0:
        raise QueryError(f"min must be in [-1, 1], got {min_score}")


def given_vector(vector: Sequence[float]) -> vectors.F32:
    """A vector given by a caller (in the stored, embedded form), scaled to unit length.

    A stored vector (float32 components, unit length to float32 precision) is taken as it
    is: scaling it again could move a component by one float32 step, and asking with a
    market's vector must answer as asking with the market (workers pass it to each other).
    """
    if len(vector) != alpha.DIM or not np.all(np.isfinite(vector)):
        raise QueryError(f"vector must have {alpha.DIM} finite components")
    given = np.array(vector, dtype=np.float64)
    as32 = given.astype(np.float32)
    if np.array_equal(as32, given) and abs(float(np.dot(given, given)) - 1.0) <= 1e-6:
        return as32
    unit: vectors.F32 = alpha.unit(given[None, :])[0]
    return unit


def target_vector(parts: Iterable[PartitionIndex], market: str) -> list[float]:
    """The stored (embedded, unit) alpha vector of ``market``, from the in-memory index."""
    check_market(market)
    for part in parts:
        found = part.vector(market)
        if found is not None:
            return found.astype(np.float64).tolist()  # type: ignore[no-any-return]
    raise NotFoundError(f"unknown market {market!r}")


def similar(
    parts: Iterable[PartitionIndex], *, vector: Sequence[float], k: int = 10,
    min_score: float = -1.0, exclude: str | None = None,
) -> list[dict[str, Any]]:
    """Top-k markets by cosine similarity of their current alpha vectors to ``vector``
    (>= min_score), best first, ties by market id; from the in-memory index."""
    check_k(k, min_score)
    target = given_vector(vector)
    hits = vectors.similar(parts, target, k, min_score, [exclude] if exclude else [])
    return [{"market": m, "score": score} for m, score in hits]


def similar_scan(
    dbs: Iterable[Db], *, market: str | None = None, vector: list[float] | None = None,
    k: int = 10, min_score: float = -1.0, exclude: str | None = None,
) -> list[dict[str, Any]]:
    """:func:`similar` by reading every market record (slow; the reference)."""
    check_k(k, min_score)
    dbs = list(dbs)
    if (market is None) == (vector is None):
        raise QueryError("give exactly one of a market or a vector")
    if market is not None:
        target = _unit_alpha(record(dbs, market))
    else:
        assert vector is not None
        target = given_vector(vector)
    ids, rows = [], []
    for rec in markets(dbs):
        if rec.market not in (market, exclude):
            ids.append(rec.market)
            rows.append(_unit_alpha(rec))
    if not rows:
        return []
    scores = vectors.exact_scores(np.vstack(rows), target)
    order = sorted(range(len(ids)), key=lambda i: (-scores[i], ids[i]))
    return [
        {"market": ids[i], "score": float(scores[i])}
        for i in order[:k] if scores[i] >= min_score
    ]


MAX_CONDITIONS = 20


def check_component(component: str) -> str:
    if component not in alpha.INDEX:
        raise QueryError(f"unknown component {component!r}; one of {list(alpha.COMPONENTS)}")
    return component


def condition(component: str, op: str, value: float) -> Condition:
    """A checked screen condition."""
    check_component(component)
    if op not in vectors.OPS:
        raise QueryError(f"op must be one of {sorted(vectors.OPS)}, got {op[:20]!r}")
    if not np.isfinite(value):
        raise QueryError("a condition's value must be finite")
    return Condition(component, op, value)


def parse_where(text: str) -> Condition:
    """``component:op:value`` (e.g. ``rsi14:gt:0.7``) as a checked condition."""
    parts = text.split(":")
    if len(parts) != 3:
        raise QueryError(f"where must be component:op:value (e.g. rsi14:gt:0.7), got "
                         f"{text[:60]!r}")
    try:
        value = float(parts[2])
    except ValueError:
        raise QueryError(f"where {text[:60]!r}: value must be a number") from None
    return condition(parts[0], parts[1], value)


def make_screen(
    conditions: Sequence[Condition], sort: str | None = None, order: str | None = None,
    limit: int = 100,
) -> Screen:
    """A checked screen. ``sort`` defaults to the first condition's component, ``order``
    to ascending when that condition is ``lt``/``le`` on the sort key, else descending."""
    check_limit(limit)
    if len(conditions) > MAX_CONDITIONS:
        raise QueryError(f"at most {MAX_CONDITIONS} conditions")
    if sort is None:
        if not conditions:
            raise QueryError("give at least one condition (where=component:op:value) "
                             "or a sort component")
        sort = conditions[0].component
    check_component(sort)
    if order is None:
        first = conditions[0] if conditions else None
        ascending = first is not None and first.component == sort and first.op in ("lt", "le")
        order = "asc" if ascending else "desc"
    if order not in ("asc", "desc"):
        raise QueryError(f"order must be asc or desc, got {order[:20]!r}")
    return Screen(tuple(conditions), sort, order == "desc", limit)


def screen_row(spec: Screen, market: str, raw: Sequence[float]) -> dict[str, Any]:
    """One market of a screen's answer: its id and the components the screen names."""
    return {"market": market, **{c: float(raw[alpha.INDEX[c]]) for c in spec.components}}


def screen(parts: Iterable[PartitionIndex], spec: Screen) -> list[dict[str, Any]]:
    """Markets whose current raw alpha passes every condition, in the screen's order;
    from the in-memory index (exact values: see :func:`gswarm.core.vectors.screen`)."""
    return [{"market": m, **dict(zip(spec.components, values, strict=True))}
            for m, values in vectors.screen(parts, spec)]


def screen_scan(dbs: Iterable[Db], spec: Screen) -> list[dict[str, Any]]:
    """:func:`screen` by reading every market record (slow; the reference)."""
    hits = []
    for rec in markets(dbs):
        raw = [rec.latest["alpha"][c] for c in alpha.COMPONENTS]
        if all(c.holds(raw) for c in spec.conditions):
            hits.append((spec.key(rec.market, raw[alpha.INDEX[spec.sort]]),
                         screen_row(spec, rec.market, raw)))
    hits.sort(key=lambda h: h[0])
    return [row for _, row in hits[:spec.limit]]


#: A page of signals is ordered newest first by (ts, seq, rule): its cursor.
SignalCursor = tuple[int, int, str]


def parse_cursor(text: str) -> SignalCursor:
    """``ts:seq:rule`` (a page's ``next``) as a cursor, or :class:`QueryError`."""
    parts = text.split(":", 2)
    try:
        if len(parts) != 3:
            raise ValueError(text)
        return int(parts[0]), int(parts[1]), parts[2]
    except ValueError:
        raise QueryError(f"parameter 'before' must be ts:seq:rule (a page's next), got "
                         f"{text[:60]!r}") from None


def signal_order(doc: dict[str, Any]) -> SignalCursor:
    return int(doc["ts"]), int(doc["seq"]), str(doc["rule"])


def signals(
    dbs: Iterable[Db], market: str | None = None, rule: str | None = None, since: int = 0,
    before: SignalCursor | None = None, limit: int = 100,
) -> list[dict[str, Any]]:
    """Stored signals (newest first): of one market or all, of one rule or all, with event
    time >= ``since`` and ordered before the cursor ``before``; at most ``limit``."""
    check_limit(limit)
    prefix = SIGNAL + (market_prefix(check_market(market)) if market is not None else b"")
    found: list[dict[str, Any]] = []
    for db in dbs:
        it = db.iter()
        it.seek(prefix)
        while it.valid() and it.key().startswith(prefix):
            doc = orjson.loads(it.value())
            it.next()
            if (doc["ts"] >= since and (rule is None or doc["rule"] == rule)
                    and (before is None or signal_order(doc) < before)):
                found.append(doc)
    found.sort(key=signal_order, reverse=True)
    return found[:limit]
