"""Signals end to end: the real Manifold export through a real worker on the real broker,
against the pure evaluator run offline over the same ticks; and kill -9 mid-stream."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import murmur2

from gswarm.config import Settings
from gswarm.core.facts import seq_for
from gswarm.core.signals import RuleSet, Signal, load_rules, offline, resolved_signals
from gswarm.feeds.replay import read_bets
from gswarm.feeds.synthetic import synthetic_ticks
from gswarm.kafka import topics
from gswarm.kafka.broker import LocalBroker
from gswarm.ports import free_port
from gswarm.runner import WorkerProcess
from gswarm.stream.pipeline import control_message
from tests.conftest import SHARED_DATA
from tests.stream.conftest import (
    WorkerPool,
    produce_ticks,
    wait_consumed,
    wait_for,
)

ALTMAN = SHARED_DATA / "manifold_bets_altman.csv"
MARKET = "altman-ceo-2024"
PARTITIONS = 4
QUESTION = "Will Sam Altman be the CEO of OpenAI on January 1st 2024?"
pytestmark = pytest.mark.timeout(300)

#: every kind, with thresholds that fire on this market's eight months of bets
RULES = """
[[rule]]
id = "move10"
kind = "move"
delta = 0.10
within_s = 3600
cooldown_s = 3600

[[rule]]
id = "cross50"
kind = "cross"
level = 0.5

[[rule]]
id = "cross90-up"
kind = "cross"
level = 0.9
direction = "up"
cooldown_s = 86400

[[rule]]
id = "whale"
kind = "whale"
volume = 1000
factor = 20

[[rule]]
id = "spike"
kind = "spike"
factor = 5

[[rule]]
id = "rsi"
kind = "alpha"
component = "rsi14"
op = "gt"
value = 0.9

[[rule]]
id = "band"
kind = "alpha"
band = "outside"
cooldown_s = 86400

[[rule]]
id = "not-this-market"
kind = "cross"
level = 0.5
prefixes = ["0x"]

[[rule]]
id = "resolved"
kind = "resolved"
"""


def partition_of(market: str, partitions: int = PARTITIONS) -> int:
    return int((murmur2(market.encode()) & 0x7FFFFFFF) % partitions)


def offline_truth(rules: RuleSet, ticks: list[dict[str, Any]], partitions: int = PARTITIONS,
                  before: int = 0) -> list[Signal]:
    """The signals of ``ticks`` produced one per message on partitions holding ``before``
    messages each: each tick's seq is its offset on its market's partition."""
    next_offset = [before] * partitions
    rows = []
    for t in ticks:
        p = partition_of(t["market"], partitions)
        rows.append((t["market"], t["ts"], seq_for(next_offset[p], 0), t["prob"], t["volume"]))
        next_offset[p] += 1
    return offline(rules, rows)


def read_signals(settings: Settings, at_least: int, timeout: float = 90.0) -> list[Signal]:
    """Every message on the signals topic, once at least ``at_least`` distinct signal ids
    are there (a signal may be sent twice after a crash: consumers dedupe by id)."""
    async def read() -> list[Signal]:
        consumer = AIOKafkaConsumer(bootstrap_servers=settings.broker,
                                    enable_auto_commit=False)
        await consumer.start()
        try:
            tps = [TopicPartition(settings.signals_topic, p) for p in range(PARTITIONS)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            out: list[Signal] = []
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while loop.time() < deadline:
                ends = await consumer.end_offsets(tps)
                batch = await consumer.getmany(timeout_ms=300)
                for records in batch.values():
                    out += [orjson.loads(r.value) for r in records]
                done = all([await consumer.position(tp) >= ends[tp] for tp in tps])
                if len({s["id"] for s in out}) >= at_least and done:
                    return out
            raise AssertionError(f"{len(out)} signals on the topic, expected {at_least}+")
        finally:
            await consumer.stop()

    return asyncio.run(read())


@pytest.fixture(scope="module")
def manifold(kafka: LocalBroker, tmp_path_factory: pytest.TempPathFactory,
             ) -> Iterator[tuple[WorkerProcess, RuleSet, list[Signal]]]:
    """One worker that ingested the Manifold export and then the market's resolution;
    the rules and the offline ground truth."""
    home = tmp_path_factory.mktemp("signals")
    rules_file = home / "rules.toml"
    rules_file.write_text(RULES)
    settings = kafka.settings.override(
        app_id="signals-e2e", data_dir=home / "data", web_port=free_port(),
        partitions=PARTITIONS, prune_interval_s=3600.0,
    )
    settings = settings.override(signals_rules=str(rules_file))
    asyncio.run(topics.apply(settings))
    rules = load_rules(rules_file)
    ticks = read_bets(ALTMAN, MARKET).ticks
    # the question first (offset 0 of the market's partition), the ticks, the resolution
    truth = offline_truth(rules, ticks, before=1)
    resolved_at = max(t["ts"] for t in ticks) + 1000
    truth += resolved_signals(rules.resolved_for(MARKET), MARKET, "YES", resolved_at,
                              seq_for(len(ticks) + 1, 0))
    pool = WorkerPool("test_signals_e2e")
    try:
        worker = pool.start(settings)
        for p in range(PARTITIONS):  # offset 0 of every partition: the question
            market = MARKET if p == partition_of(MARKET) else f"other-{p}"
            while partition_of(market) != p:
                market += "x"
            asyncio.run(_send_meta(settings, market, ticks[0]["ts"] - 1000, {
                "market/question": QUESTION if market == MARKET else "?"}))
        produce_ticks(settings, ticks)
        asyncio.run(_send_meta(settings, MARKET, resolved_at, {"market/resolution": "YES"}))
        wait_consumed(worker, PARTITIONS + 1, field="controls")
        wait_consumed(worker, len(ticks))
        yield worker, rules, truth
    finally:
        pool.stop()


async def _send_meta(settings: Settings, market: str, ts: int, meta: dict[str, Any]) -> None:
    from aiokafka import AIOKafkaProducer

    value, headers = control_message("market", market=market, ts=ts, meta=meta)
    producer = AIOKafkaProducer(bootstrap_servers=settings.broker, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(settings.tick_topic, value, key=market.encode(),
                                     headers=list(headers.items()))
    finally:
        await producer.stop()


def test_every_kind_fires_exactly_the_offline_signals_on_the_manifold_export(
    manifold: tuple[WorkerProcess, RuleSet, list[Signal]],
) -> None:
    worker, _, truth = manifold
    kinds = {s["kind"] for s in truth}
    assert kinds == {"move", "cross", "whale", "spike", "alpha", "resolved"}
    assert "not-this-market" not in {s["rule"] for s in truth}
    got = read_signals(worker.settings, len(truth))
    assert sorted(s["id"] for s in got) == sorted(s["id"] for s in truth)  # no duplicates
    by_id = {s["id"]: s for s in truth}
    for s in got:
        assert s["market"] == MARKET and s["question"] == QUESTION
        want = by_id[s["id"]]
        assert (s["rule"], s["ts"], s["seq"], s["values"]) == (
            want["rule"], want["ts"], want["seq"], want["values"])
        assert s["id"] == f"{s['rule']}:{MARKET}:{s['seq']}"


def test_api_metrics_and_tail_show_the_signals(
    manifold: tuple[WorkerProcess, RuleSet, list[Signal]],
) -> None:
    worker, _, truth = manifold
    # paged, newest first, until exhausted
    seen: list[dict[str, Any]] = []
    before = ""
    while True:
        page = worker.get(f"/api/signals?market={MARKET}&limit=50&before={before}")
        seen += page["signals"]
        if page["next"] is None:
            break
        before = page["next"]
    assert [s["id"] for s in seen] == [s["id"] for s in sorted(
        truth, key=lambda s: (s["ts"], s["seq"], s["rule"]), reverse=True)]
    assert seen[0]["rule"] == "resolved" and seen[0]["values"] == {"resolution": "YES"}

    whales = worker.get("/api/signals?rule=whale&limit=1000")["signals"]
    assert {s["id"] for s in whales} == {s["id"] for s in truth if s["rule"] == "whale"}
    late = truth[len(truth) // 2]["ts"]
    recent = worker.get(f"/api/signals?since={late}&limit=1000")["signals"]
    assert {s["id"] for s in recent} == {s["id"] for s in truth if s["ts"] >= late}
    for bad in ("limit=0", "limit=x", "since=soon", "before=12"):
        with pytest.raises(urllib.error.HTTPError) as err:
            worker.get(f"/api/signals?{bad}")
        assert err.value.code == 400 and "error" in orjson.loads(err.value.read())

    with urllib.request.urlopen(worker.url + "/metrics", timeout=10) as resp:
        metrics = resp.read().decode()
    for rule in {s["rule"] for s in truth}:
        n = sum(1 for s in truth if s["rule"] == rule)
        assert f'gswarm_signals_total{{rule="{rule}"}} {float(n)}' in metrics

    env = worker.settings.to_env()
    out = subprocess.run(
        [str(Path(sys.executable).parent / "gswarm"), "signals", "tail", "--from-start", "--rule",
         "cross50", "--count", "3", "--json"],
        env=env, capture_output=True, text=True, timeout=60, check=True)
    lines = [orjson.loads(x) for x in out.stdout.splitlines()]
    assert len(lines) == 3 and {s["rule"] for s in lines} == {"cross50"}


def test_kill_9_mid_stream_leaves_the_signal_ids_of_a_calm_run(
    settings_factory: Callable[..., Settings], workers: Callable[..., WorkerProcess],
) -> None:
    # the default rules over a synthetic stream: jumps, crosses, whales, band breaks
    ticks = list(synthetic_ticks(markets=200, count=40_000, seed=7, rate=2000))
    settings = settings_factory(web_port=free_port(), partitions=PARTITIONS,
                                commit_interval_s=5.0, prune_interval_s=3600.0)
    asyncio.run(topics.apply(settings))
    rules = load_rules(settings.signals_rules_path or "")
    truth = offline_truth(rules, ticks)
    assert len(truth) > 100
    produce_ticks(settings, ticks)
    for _ in range(2):
        victim = workers(settings, "crash")

        def under_way(v: WorkerProcess = victim) -> bool:
            return int(v.get("/api/stats")["ticks"]) > 3000

        wait_for(under_way, 60, "ingest under way")
        victim.kill()
    survivor = workers(settings, "crash")
    got = read_signals(settings, len(truth))
    assert {s["id"] for s in got} == {s["id"] for s in truth}
    assert survivor.get("/api/stats")["duplicates"] > 0, "the kill caused no redelivery"
