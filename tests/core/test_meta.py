"""Market metadata messages: validation, and datoms only for values that changed."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gswarm.core.facts import META_ATTRIBUTES, decode_value, split_fact_key
from gswarm.core.meta import meta_datoms, parse_meta
from gswarm.errors import TickError

DOC: dict[str, Any] = {"market": "m-1", "ts": 1_700_000_000_000, "meta": {
    "market/question": "Will it rain?", "market/close_time": 1_700_100_000_000,
    "market/resolution": None}}


def test_a_valid_message_parses() -> None:
    meta = parse_meta(DOC, b"m-1")
    assert meta.market == "m-1" and meta.values["market/question"] == "Will it rain?"


@pytest.mark.parametrize("doc, key, reason", [
    ([], None, "bad_metadata"),
    ({**DOC, "market": ""}, None, "bad_metadata"),
    ({**DOC, "ts": -5}, None, "bad_metadata"),
    ({**DOC, "ts": 1.5}, None, "bad_metadata"),
    ({**DOC, "meta": {}}, None, "bad_metadata"),
    ({**DOC, "meta": {"market/colour": "red"}}, None, "bad_metadata"),
    ({**DOC, "meta": {"market/close_time": "tomorrow"}}, None, "bad_metadata"),
    ({**DOC, "meta": {"market/question": "x" * 5000}}, None, "bad_metadata"),
    (DOC, b"m-2", "key_mismatch"),
])
def test_bad_messages_name_their_reason(doc: Any, key: bytes | None, reason: str) -> None:
    with pytest.raises(TickError) as err:
        parse_meta(doc, key)
    assert err.value.reason == reason


def test_only_changed_values_become_datoms() -> None:
    stored: dict[int, bytes] = {}

    def write(doc: dict[str, Any], seq: int) -> list[str]:
        datoms = meta_datoms(parse_meta(doc, None), seq, stored.get)
        for key, value in datoms:
            _, code, ts, kseq = split_fact_key(key)
            assert (ts, kseq) == (doc["ts"], seq)
            stored[code] = value
        return sorted(name for name, code in META_ATTRIBUTES.items()
                      if any(split_fact_key(k)[1] == code for k, _ in datoms))

    # a null never stored is not a change
    assert write(DOC, 1) == ["market/close_time", "market/question"]
    assert write({**DOC, "ts": DOC["ts"] + 1}, 2) == []  # the same again: nothing
    resolved = {**DOC, "ts": DOC["ts"] + 2, "meta": {**DOC["meta"], "market/resolution": "YES"}}
    assert write(resolved, 3) == ["market/resolution"]
    code = META_ATTRIBUTES["market/resolution"]
    assert decode_value(code, stored[code]) == "YES"
    assert orjson.loads(stored[META_ATTRIBUTES["market/close_time"]]) == 1_700_100_000_000
