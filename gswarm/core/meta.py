"""Market metadata: the ``market`` control message and the datoms it writes.

A live feed sends a market's metadata (question, outcome type, close time, resolution...)
on the tick topic, keyed by the market id so it lands on the partition of the market's
ticks, with the header ``gswarm-control: market`` and this JSON value::

    {"market": "abc123", "ts": 1700000000000,
     "meta": {"market/question": "Will it rain?", "market/close_time": 1701000000000,
              "market/resolution": null}}

``ts`` is when the feed observed the metadata (ms since the epoch): it is the event time of
the datoms written, so as-of queries answer "what did the market say at time t". Only values
that differ from the market's latest stored value are written, so a feed may re-send
unchanged metadata (a restart, a periodic refresh) without growing history.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from gswarm.core.facts import META_ATTRIBUTES, fact_key
from gswarm.core.ticks import MAX_ID_LEN
from gswarm.errors import TickError

CONTROL_OP = "market"
#: Which JSON types each metadata attribute accepts (``None`` = unknown or not set).
_TYPES: dict[str, tuple[type, ...]] = {
    "market/question": (str,),
    "market/slug": (str,),
    "market/url": (str,),
    "market/outcome_type": (str,),
    "market/close_time": (int,),
    "market/resolution": (str,),
    "market/resolution_time": (int,),
}
MAX_TEXT = 4000


@dataclass(frozen=True)
class MarketMeta:
    """A validated metadata message: values by attribute name (``None`` means unset)."""

    market: str
    ts: int
    values: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"market": self.market, "ts": self.ts, "meta": self.values}


def parse_meta(doc: Any, key: bytes | None) -> MarketMeta:
    """Validate a ``market`` control document; raise :class:`TickError` (``bad_metadata``)."""
    if not isinstance(doc, dict):
        raise TickError("bad_metadata", "the value is not a JSON object")
    market, ts, values = doc.get("market"), doc.get("ts"), doc.get("meta")
    if not isinstance(market, str) or not market or len(market) > MAX_ID_LEN or any(
        ord(c) < 32 for c in market
    ):
        raise TickError("bad_metadata", f"bad market id {str(market)[:50]!r}")
    if key is not None and key != market.encode():
        raise TickError("key_mismatch", f"key {key[:50]!r} != market {market!r}")
    if type(ts) is not int or not 0 < ts < 2**62:
        raise TickError("bad_metadata", f"ts must be a positive integer of ms, got {ts!r}")
    if not isinstance(values, dict) or not values:
        raise TickError("bad_metadata", "meta must be a non-empty JSON object")
    for name, value in values.items():
        types = _TYPES.get(name)
        if types is None:
            raise TickError("bad_metadata", f"unknown attribute {name!r}; one of "
                            f"{sorted(META_ATTRIBUTES)}")
        if value is not None and (type(value) not in types or (
                isinstance(value, str) and len(value) > MAX_TEXT)):
            raise TickError("bad_metadata", f"{name} has a bad value {str(value)[:50]!r}")
    return MarketMeta(market, ts, dict(values))


Current = Callable[[int], bytes | None]


def meta_datoms(meta: MarketMeta, seq: int, current: Current) -> list[tuple[bytes, bytes]]:
    """(key, value) of the datoms to write: the attributes whose value changed.

    ``current(code)`` is the stored bytes of the attribute's latest datom, or None. An
    attribute never stored and sent as null is not written (nothing changed).
    """
    out = []
    for name, value in meta.values.items():
        code = META_ATTRIBUTES[name]
        encoded = orjson.dumps(value)
        stored = current(code)
        if stored == encoded or (stored is None and value is None):
            continue
        out.append((fact_key(meta.market, code, meta.ts, seq), encoded))
    return out
