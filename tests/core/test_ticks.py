"""Tick validation: every rule has its reason; arrays reject bad elements alone."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gswarm.core.ticks import REASONS, decode, parse_tick
from gswarm.errors import TickError

GOOD = {"v": 1, "market": "m-1", "prob": 0.25, "ts": 1_700_000_000_000, "volume": 3.5,
        "trader": "u-1", "source": "test"}


def bad(**changes: object) -> bytes:
    doc = {**GOOD, **changes}
    return orjson.dumps({k: v for k, v in doc.items() if v is not DROP})


DROP = object()

CASES = [
    (b"", "empty"),
    (b"{not json", "not_json"),
    (b'{"v":1,"market":"m-1","prob":NaN}', "not_finite"),
    (b'{"v":1,"market":"m-1","prob":1e999}', "not_finite"),
    (b"[]", "empty_array"),
    (b"42", "not_object"),
    (bad(v=2), "unknown_version"),
    (bad(v="1"), "unknown_version"),
    (bad(v=DROP), "missing_field"),
    (bad(prob=DROP), "missing_field"),
    (bad(trader=DROP), "missing_field"),
    (bad(prob="0.5"), "bad_type"),
    (bad(prob=True), "bad_type"),
    (bad(trader=5), "bad_type"),
    (bad(id=5), "bad_type"),
    (bad(market=""), "bad_market_id"),
    (bad(market="a\nb"), "bad_market_id"),
    (bad(market="x" * 201), "bad_market_id"),
    (bad(prob=1.0001), "prob_out_of_range"),
    (bad(prob=-0.1), "prob_out_of_range"),
    (bad(ts=0), "bad_timestamp"),
    (bad(ts=1.5), "bad_timestamp"),
    (bad(volume=-1), "negative_volume"),
]


@pytest.mark.parametrize(("value", "reason"), CASES)
def test_each_rule_has_its_reason(value: bytes, reason: str) -> None:
    good, rejected = decode(value, b"m-1", 10_000)
    assert good == []
    assert [r.reason for r in rejected] == [reason]
    assert reason in REASONS


def test_oversized_and_key_mismatch() -> None:
    assert decode(orjson.dumps(GOOD), b"m-1", 20)[1][0].reason == "oversized"
    assert decode(orjson.dumps(GOOD), b"m-2", 10_000)[1][0].reason == "key_mismatch"
    assert decode(orjson.dumps(GOOD), None, 10_000)[1][0].reason == "key_mismatch"


def test_good_tick_and_defaults() -> None:
    (index, tick), = decode(orjson.dumps(GOOD), b"m-1", 10_000)[0]
    assert index == 0
    assert (tick.market, tick.prob, tick.ts, tick.outcome, tick.id) == (
        "m-1", 0.25, 1_700_000_000_000, "YES", None)
    assert parse_tick({**GOOD, "prob": 1, "extra": "ignored"}).prob == 1.0


def test_array_bad_element_rejected_alone() -> None:
    items = [GOOD, {**GOOD, "prob": 2}, {**GOOD, "ts": GOOD["ts"] + 1}]  # type: ignore[operator]
    good, rejected = decode(orjson.dumps(items), b"m-1", 10_000)
    assert [i for i, _ in good] == [0, 2]
    assert [(r.reason, r.index) for r in rejected] == [("prob_out_of_range", 1)]
    assert orjson.loads(rejected[0].element or b"") == items[1]


def test_the_fast_path_and_the_checked_path_agree_on_random_documents() -> None:
    """parse_tick's single pass accepts exactly what the field-by-field checks accept."""
    import random

    from gswarm.core.ticks import _parse_checked

    rng = random.Random(4)
    values: list[Any] = [None, True, 0, 1, -1, 2**62, 2**62 - 1, 0.0, 0.5, 1.0, 1.5, -0.0,
                         1e308, "", "m", "m\x01", "x" * 201, "YES", [], {}, 1700000000000]
    base = {"v": 1, "market": "m-1", "prob": 0.5, "ts": 1700000000000, "volume": 2.0,
            "trader": "u", "source": "s", "outcome": "NO", "id": "b"}
    for _ in range(20_000):
        doc = dict(base)
        for _ in range(rng.randint(0, 2)):
            field = rng.choice([*base, "extra"])
            if rng.random() < 0.2:
                doc.pop(field, None)
            else:
                doc[field] = rng.choice(values)
        try:
            expected: Any = _parse_checked(doc)
        except TickError as exc:
            expected = exc.reason
        try:
            got: Any = parse_tick(doc)
        except TickError as exc:
            got = exc.reason
        assert got == expected, doc
