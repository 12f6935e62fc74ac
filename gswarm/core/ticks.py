"""The tick: one probability observation of one market, and its strict wire codec.

A Kafka message on the tick topic is keyed by market id and holds one tick as a JSON object,
or a JSON array of ticks of that market. Schema version 1::

    {"v": 1, "market": "m-00042", "prob": 0.53, "ts": 1700000000000, "volume": 10.0,
     "trader": "u-1234", "source": "synthetic", "outcome": "YES", "id": "bet-id"}

``v``, ``market``, ``prob``, ``ts``, ``volume``, ``trader`` and ``source`` are required;
``outcome`` (default ``"YES"``) and ``id`` (the bet id, default none) are optional. Unknown
fields are ignored so producers can add context. Every failure has a reason code from
:data:`REASONS`: that code is what the dead-letter topic and the counters carry.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

from gswarm.errors import TickError

_NON_FINITE = re.compile(rb"(?<![\w\"])-?(NaN|Infinity)(?![\w\"])")

SCHEMA_VERSION = 1
#: A message with this header is a control message (``prune``, ``market``), not ticks.
CONTROL_HEADER = "gswarm-control"
MAX_ID_LEN = 200

#: Dead-letter reason codes and what they mean.
REASONS: dict[str, str] = {
    "oversized": "the message is larger than GSWARM_MAX_MESSAGE_BYTES",
    "empty": "the message has no value",
    "not_json": "the value is not valid JSON",
    "not_object": "the value (or an array element) is not a JSON object",
    "empty_array": "the value is an empty JSON array",
    "unknown_version": "field v is not a schema version this worker knows",
    "missing_field": "a required field is absent",
    "bad_type": "a field has the wrong JSON type",
    "bad_market_id": "market is empty, too long, or contains a NUL or control character",
    "prob_out_of_range": "prob is outside [0, 1]",
    "not_finite": "a number is NaN or infinite",
    "bad_timestamp": "ts is not a positive number of milliseconds",
    "negative_volume": "volume is negative",
    "key_mismatch": "the message key is not the tick's market id",
    "wrong_partition": "the message is not on the partition its key hashes to (murmur2)",
    "bad_metadata": "a market metadata control message is malformed (see gswarm.core.meta)",
}


class Tick(NamedTuple):
    """A validated tick. ``ts`` is event time in ms since the epoch (UTC).

    Immutable; a named tuple because one is built per tick (a third of the cost of a
    frozen dataclass).
    """

    market: str
    prob: float
    ts: int
    volume: float
    trader: str
    source: str
    outcome: str = "YES"
    id: str | None = None

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "v": SCHEMA_VERSION, "market": self.market, "prob": self.prob, "ts": self.ts,
            "volume": self.volume, "trader": self.trader, "source": self.source,
            "outcome": self.outcome,
        }
        if self.id is not None:
            doc["id"] = self.id
        return doc


@dataclass(frozen=True, slots=True)
class Rejected:
    """One rejected item: the whole message (``index`` None) or one element of an array."""

    reason: str
    detail: str
    index: int | None = None
    element: bytes | None = None  # the array element's JSON, when one element is rejected


def decode(value: bytes | None, key: bytes | None, max_bytes: int) -> tuple[
    list[tuple[int, Tick]], list[Rejected]
]:
    """Decode one message into ``(index, tick)`` pairs and rejections.

    A bad element of an array is rejected alone; its good siblings are kept. ``index`` is
    the element's position (0 for a single-object message) so the pair
    (partition offset, index) identifies a tick's origin.
    """
    if value is None or value == b"":
        return [], [Rejected("empty", "no value")]
    if len(value) > max_bytes:
        return [], [Rejected("oversized", f"{len(value)} bytes > {max_bytes}")]
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        # JSON has no NaN/Infinity; name the real problem when that is what was sent
        if "infinity" in str(exc) or _NON_FINITE.search(value):
            return [], [Rejected("not_finite", str(exc))]
        return [], [Rejected("not_json", str(exc))]
    items, single = (doc, False) if isinstance(doc, list) else ([doc], True)
    if not items:
        return [], [Rejected("empty_array", "[]")]
    key_text = _key_text(key)
    good: list[tuple[int, Tick]] = []
    bad: list[Rejected] = []
    for i, item in enumerate(items):
        try:
            tick = parse_tick(item)
            if tick.market != key_text:
                raise TickError("key_mismatch", f"key {key_text!r} != market {tick.market!r}")
            good.append((i, tick))
        except TickError as exc:
            if single:
                bad.append(Rejected(exc.reason, exc.detail))
            else:
                bad.append(Rejected(exc.reason, exc.detail, i, orjson.dumps(item)))
    return good, bad


def _key_text(key: bytes | None) -> str | None:
    if key is None:
        return None
    try:
        return key.decode()
    except UnicodeDecodeError:
        return None


_CONTROL = re.compile(r"[\x00-\x1f]")
_INF = float("inf")


def parse_tick(doc: Any) -> Tick:
    """Validate one decoded JSON value as a tick; raise :class:`TickError` with a reason.

    A well-formed tick takes one straight pass of type and range checks; anything that
    fails one goes through :func:`_parse_checked`, which finds and names the reason.
    """
    if type(doc) is dict:
        try:
            version, market, prob, ts = doc["v"], doc["market"], doc["prob"], doc["ts"]
            volume, trader, source = doc["volume"], doc["trader"], doc["source"]
        except KeyError:
            return _parse_checked(doc)
        outcome = doc.get("outcome", "YES")
        bet_id = doc.get("id")
        tp, tv = type(prob), type(volume)
        if (type(version) is int and version == SCHEMA_VERSION
                and type(market) is str and 0 < len(market) <= MAX_ID_LEN
                and _CONTROL.search(market) is None
                and (tp is float or tp is int) and 0.0 <= prob <= 1.0
                and type(ts) is int and 0 < ts < 2**62
                and (tv is float or tv is int) and 0.0 <= volume < _INF
                and type(trader) is str and type(source) is str and type(outcome) is str
                and (bet_id is None or type(bet_id) is str)):
            return Tick(market, float(prob), ts, float(volume), trader, source, outcome,
                        bet_id)
    return _parse_checked(doc)


def _parse_checked(doc: Any) -> Tick:
    """:func:`parse_tick` one check at a time, raising at the first that fails."""
    if not isinstance(doc, dict):
        raise TickError("not_object", type(doc).__name__)
    version = doc.get("v")
    if version is None:
        raise TickError("missing_field", "v")
    if type(version) is not int or version != SCHEMA_VERSION:
        raise TickError("unknown_version", repr(version))
    market = _str(doc, "market")
    if not market or len(market) > MAX_ID_LEN or _CONTROL.search(market) is not None:
        raise TickError("bad_market_id", repr(market[:MAX_ID_LEN + 1]))
    prob = _number(doc, "prob")
    if not 0.0 <= prob <= 1.0:
        raise TickError("prob_out_of_range", repr(prob))
    ts = _number(doc, "ts")
    if ts <= 0 or ts != int(ts) or ts >= 2**62:
        raise TickError("bad_timestamp", repr(ts))
    volume = _number(doc, "volume")
    if volume < 0:
        raise TickError("negative_volume", repr(volume))
    trader, source = _str(doc, "trader"), _str(doc, "source")
    outcome = _str(doc, "outcome") if "outcome" in doc else "YES"
    bet_id = doc.get("id")
    if bet_id is not None and not isinstance(bet_id, str):
        raise TickError("bad_type", "id must be a string or null")
    return Tick(market, float(prob), int(ts), float(volume), trader, source, outcome, bet_id)


def _str(doc: dict[str, Any], name: str) -> str:
    if name not in doc:
        raise TickError("missing_field", name)
    value = doc[name]
    if not isinstance(value, str):
        raise TickError("bad_type", f"{name} must be a string, got {type(value).__name__}")
    return value


def _number(doc: dict[str, Any], name: str) -> float:
    if name not in doc:
        raise TickError("missing_field", name)
    value = doc[name]
    # bool is an int in Python, but true/false is not a number in a tick
    if type(value) not in (int, float):
        raise TickError("bad_type", f"{name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise TickError("not_finite", f"{name}={value!r}")
    return float(value) if type(value) is float else int(value)
