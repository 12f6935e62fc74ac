"""The synthetic feed: deterministic, skewed, bounded; array grouping; produce() on a fake Kafka."""

from __future__ import annotations

import asyncio
import re
import statistics
import time
from collections import Counter, defaultdict
from itertools import pairwise
from typing import Any

import orjson
import pytest

import gswarm.feeds.producer as producer_mod
from gswarm.core.ticks import parse_tick
from gswarm.errors import FeedError
from gswarm.feeds.producer import ProduceSummary, produce
from gswarm.feeds.synthetic import CHUNK, batch_by_market, synthetic_ticks

FIELDS = {
    "v": int, "market": str, "prob": float, "ts": int, "volume": float, "trader": str,
    "outcome": str, "source": str, "id": str,
}


def by_market(ticks: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for tick in ticks:
        groups[tick["market"]].append(tick)
    return groups


# -- synthetic_ticks ---------------------------------------------------------------------


def test_deterministic_per_seed_and_different_across_seeds() -> None:
    a = list(synthetic_ticks(50, 5000, seed=7))
    assert a == list(synthetic_ticks(50, 5000, seed=7))
    b = list(synthetic_ticks(50, 5000, seed=8))
    assert [t["prob"] for t in a] != [t["prob"] for t in b]
    assert [t["market"] for t in a] != [t["market"] for t in b]
    assert {t["id"] for t in a}.isdisjoint(t["id"] for t in b)


def test_a_shorter_feed_is_a_prefix_of_a_longer_one() -> None:
    long = list(synthetic_ticks(30, CHUNK + 500, seed=3))
    assert len(long) == CHUNK + 500
    assert list(synthetic_ticks(30, 1000, seed=3)) == long[:1000]
    assert list(synthetic_ticks(30, 0, seed=3)) == []


def test_every_tick_has_the_required_fields_with_the_right_types() -> None:
    ticks = list(synthetic_ticks(20, 3000, seed=1))
    assert len(ticks) == 3000
    for tick in ticks:
        assert set(tick) == set(FIELDS)
        for name, kind in FIELDS.items():
            assert type(tick[name]) is kind, (name, tick)
        assert tick["v"] == 1
        assert tick["source"] == "synthetic"
        assert tick["outcome"] in ("YES", "NO")
        assert re.fullmatch(r"m-\d{5}", tick["market"])
        assert int(tick["market"][2:]) < 20
        assert re.fullmatch(r"u-\d+", tick["trader"])
        assert int(tick["trader"][2:]) < 100  # pool of max(100, 5 * markets)
        assert tick["volume"] >= 1.0 and round(tick["volume"], 2) == tick["volume"]
        # the wire codec accepts it as is
        parsed = parse_tick(orjson.loads(orjson.dumps(tick)))
        assert (parsed.market, parsed.prob, parsed.ts, parsed.id) == (
            tick["market"], tick["prob"], tick["ts"], tick["id"]
        )
    assert len({t["id"] for t in ticks}) == len(ticks)


def test_market_popularity_is_zipf_skewed() -> None:
    counts = Counter(t["market"] for t in synthetic_ticks(200, 50_000, seed=5))
    ranked = sorted(counts.values(), reverse=True)
    assert ranked[0] > 10 * statistics.median(ranked)
    assert ranked[0] > 0.1 * 50_000
    # which ids are popular is drawn from the seed: not always m-00000
    tops = {
        Counter(t["market"] for t in synthetic_ticks(200, 2000, seed=s)).most_common(1)[0][0]
        for s in range(5)
    }
    assert len(tops) > 1


def test_traders_are_skewed_too() -> None:
    counts = Counter(t["trader"] for t in synthetic_ticks(100, 50_000, seed=2))
    ranked = sorted(counts.values(), reverse=True)
    assert len(counts) > 200
    assert ranked[0] > 5 * statistics.median(ranked)


def test_probabilities_stay_strictly_inside_0_1() -> None:
    # few markets, many ticks: every walk goes far and is reflected many times
    probs = [t["prob"] for t in synthetic_ticks(3, 200_000, seed=11)]
    assert min(probs) > 0.0 and max(probs) < 1.0
    assert min(probs) < 0.05 and max(probs) > 0.95  # the walks do reach the edges


def test_walks_move_by_small_steps_and_outcome_follows_the_move() -> None:
    for ticks in by_market(list(synthetic_ticks(10, 20_000, seed=4))).values():
        for before, after in pairwise(ticks):
            assert abs(after["prob"] - before["prob"]) < 0.2
            if after["prob"] > before["prob"]:
                assert after["outcome"] == "YES"
            elif after["prob"] < before["prob"]:
                assert after["outcome"] == "NO"


def test_times_are_non_decreasing_at_the_requested_rate() -> None:
    ticks = list(synthetic_ticks(10, 20_000, seed=9, start_ms=1_600_000_000_000, rate=50.0))
    ts = [t["ts"] for t in ticks]
    assert all(a <= b for a, b in pairwise(ts))
    assert ts[0] >= 1_600_000_000_000
    mean_gap = (ts[-1] - ts[0]) / (len(ts) - 1)
    assert mean_gap == pytest.approx(1000.0 / 50.0, rel=0.05)


@pytest.mark.parametrize("kwargs", [
    {"markets": 0, "count": 1, "seed": 1},
    {"markets": 1, "count": -1, "seed": 1},
    {"markets": 1, "count": 1, "seed": 1, "rate": 0.0},
    {"markets": 1, "count": 1, "seed": 1, "rate": float("nan")},
])
def test_bad_arguments_raise_feed_error(kwargs: dict[str, Any]) -> None:
    with pytest.raises(FeedError):
        list(synthetic_ticks(**kwargs))


# -- batch_by_market ---------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 3, 10])
def test_batch_by_market_keeps_order_and_size(size: int) -> None:
    ticks = list(synthetic_ticks(25, 5000, seed=6))
    batches = list(batch_by_market(ticks, size))
    assert all(1 <= len(batch) <= size for _, batch in batches)
    assert all(t["market"] == market for market, batch in batches for t in batch)
    flat = [t for _, batch in batches for t in batch]
    assert sorted(t["id"] for t in flat) == sorted(t["id"] for t in ticks)  # each once
    regrouped = by_market(flat)
    for market, original in by_market(ticks).items():
        assert regrouped[market] == original
    if size == 1:
        assert flat == ticks
    else:
        assert len(batches) < len(ticks)


def test_batch_by_market_fills_arrays_of_one_market() -> None:
    ticks = [{"market": m, "n": i} for i, m in enumerate("aabababbbc")]
    batches = list(batch_by_market(ticks, 3))
    assert [(m, [t["n"] for t in b]) for m, b in batches] == [
        ("a", [0, 1, 3]), ("b", [2, 4, 6]), ("a", [5]), ("b", [7, 8]), ("c", [9]),
    ]


def test_batch_by_market_window_bounds_what_is_held_back() -> None:
    consumed = 0

    def source() -> Any:
        nonlocal consumed
        for i in range(1000):
            consumed += 1
            yield {"market": f"m{i % 50}", "n": i}

    emitted = 0
    for _, batch in batch_by_market(source(), 10, window=20):
        # no array fills up (50 markets in turn), but the window emits the oldest early
        assert consumed - 1 - batch[0]["n"] <= 20 or consumed == 1000
        emitted += len(batch)
    assert emitted == 1000


def test_batch_by_market_rejects_bad_input() -> None:
    with pytest.raises(FeedError):
        list(batch_by_market([{"market": "a"}], 0))
    with pytest.raises(FeedError):
        list(batch_by_market([{"prob": 0.5}], 2))


# -- produce() with a fake AIOKafkaProducer ----------------------------------------------


class FakeProducer:
    """Records what produce() sends; acknowledges each message asynchronously."""

    instances: list[FakeProducer] = []

    def __init__(self, **config: Any) -> None:
        self.config = config
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.futures: list[asyncio.Future[None]] = []
        self.started = self.stopped = False
        self.fail_at: int | None = None
        FakeProducer.instances.append(self)

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def send(self, topic: str, key: bytes, value: bytes) -> asyncio.Future[None]:
        if self.fail_at is not None and len(self.sent) == self.fail_at:
            raise RuntimeError("broker gone")
        self.sent.append((topic, key, value))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_soon(future.set_result, None)
        self.futures.append(future)
        return future


@pytest.fixture
def fake_kafka(monkeypatch: pytest.MonkeyPatch) -> type[FakeProducer]:
    FakeProducer.instances = []
    monkeypatch.setattr(producer_mod, "AIOKafkaProducer", FakeProducer)
    return FakeProducer


async def test_produce_sends_keyed_ticks_and_awaits_every_ack(
    fake_kafka: type[FakeProducer],
) -> None:
    ticks = list(synthetic_ticks(10, 500, seed=1))
    summary = await produce("b:9092", "ticks", ticks, progress=False)
    fake = fake_kafka.instances[0]
    assert fake.config == {
        "bootstrap_servers": "b:9092", "linger_ms": 5, "max_batch_size": 262144,
        "acks": "all", "enable_idempotence": True, "request_timeout_ms": 30000,
    }
    assert fake.started and fake.stopped
    assert all(f.done() for f in fake.futures)
    assert [orjson.loads(v) for _, _, v in fake.sent] == ticks
    assert all(k == t["market"].encode() and topic == "ticks"
               for (topic, k, _), t in zip(fake.sent, ticks, strict=True))
    assert (summary.messages, summary.ticks) == (500, 500)
    assert "500 ticks in 500 messages" in str(summary)


async def test_produce_packs_arrays_of_one_market(fake_kafka: type[FakeProducer]) -> None:
    ticks = list(synthetic_ticks(5, 400, seed=2))

    async def source() -> Any:
        for tick in ticks:
            yield tick

    kinds: list[Any] = [ticks, source()]
    for kind in kinds:
        summary = await produce("b", "t", kind, array_size=8, progress=False)
        fake = fake_kafka.instances[-1]
        assert summary.ticks == 400 and summary.messages == len(fake.sent) < 400
        decoded: list[dict[str, Any]] = []
        for _, key, value in fake.sent:
            doc = orjson.loads(value)
            items = doc if isinstance(doc, list) else [doc]
            assert 1 <= len(items) <= 8
            assert {t["market"].encode() for t in items} == {key}
            decoded.extend(items)
        assert by_market(decoded) == by_market(ticks)


async def test_produce_limits_the_rate(fake_kafka: type[FakeProducer]) -> None:
    started = time.perf_counter()
    summary = await produce("b", "t", synthetic_ticks(5, 300, seed=3), rate=1000.0,
                            progress=False)
    elapsed = time.perf_counter() - started
    assert summary.ticks == 300
    assert 0.25 < elapsed < 1.5  # 300 ticks at 1000/s
    assert summary.ticks_per_s < 1300


async def test_produce_stops_the_producer_on_failure(fake_kafka: type[FakeProducer]) -> None:
    def failing() -> Any:
        yield from synthetic_ticks(5, 10, seed=1)
        raise FeedError("source broke")

    with pytest.raises(FeedError, match="source broke"):
        await produce("b", "t", failing(), progress=False)
    assert fake_kafka.instances[-1].stopped


def test_summary_is_one_readable_line() -> None:
    text = str(ProduceSummary(messages=1200, ticks=12000, seconds=2.5, ticks_per_s=4800.0))
    assert text == "produced 12,000 ticks in 1,200 messages in 2.50 s (4,800 ticks/s)"
    assert "\n" not in text
