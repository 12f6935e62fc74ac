"""Feed cursors: late items within the window still count as new; repeats do not."""

from __future__ import annotations

from pathlib import Path

import pytest

from gswarm.errors import FeedError
from gswarm.feeds.cursor import Cursor, FileCursors


def test_the_window_keeps_late_items_new_and_delivered_ones_seen() -> None:
    c = Cursor(window_ms=1000)
    assert not c.seen("a", 5)  # an empty cursor has seen nothing
    c.add("a", 10_000)
    c.add("b", 10_500)
    assert c.seen("a", 10_000) and c.seen("b", 10_500)
    assert not c.seen("late", 9_600)  # older than the newest, inside the window: new
    assert c.seen("ancient", 8_000)  # older than the window: delivered long ago
    assert c.since() == 9_500
    c.add("c", 20_000)  # the window moves: old ids are trimmed
    assert list(c.recent) == ["c"] and c.seen("a", 10_000)


def test_trimming_keeps_the_window_bounded_over_a_long_stream() -> None:
    c = Cursor(window_ms=100)
    for i in range(100_000):
        c.add(f"id{i}", i)
    assert len(c.recent) == 101


async def test_file_cursors_round_trip_and_refuse_garbage(tmp_path: Path) -> None:
    store = FileCursors(tmp_path / "sub" / "cursor.json")
    assert await store.load() == {}
    c = Cursor(1000)
    c.add("x", 5)
    await store.save({"scopes": {"global": c.to_json()}})
    doc = await store.load()
    again = Cursor.from_json(doc["scopes"]["global"], 1000)
    assert again == c
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(FeedError, match="not JSON"):
        await FileCursors(tmp_path / "bad.json").load()
    with pytest.raises(FeedError, match="not a feed cursor"):
        Cursor.from_json({"ts": "x"}, 1000)
