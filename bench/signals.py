"""Signals: tick -> signal latency at a fixed rate, and the CPU 20 rules add per tick.

Latency: a fresh lean worker with :data:`RULES` (20 rules), a producer sending synthetic
ticks at ``rate`` stamped with the wall clock as they are sent, and a consumer of the
signals topic noting, for each signal, when it arrives minus its tick's event time (both
clocks this machine's): p50, p99, max, of the ticks sent after a warm-up (``warm_s``: a
running worker's markets have histories; a fresh one's first minute is reported apart).

The same run's produce -> queryable lag of the facts (``arrival_lag_ms``) is reported
beside it: a signal goes out at the end of the batch that makes its tick queryable, so
the two move together (on a loaded machine both are long).

Cost: the ingest core (:func:`gswarm.core.ingest.apply_batch`: duplicate filter, alpha
vectors, records, segments) over the same batches of synthetic ticks (500 per batch, as
a worker's batches at a few thousand ticks/s), without rules and with the 20, in this
process: CPU microseconds per tick, best of ``runs``, and the difference in per cent. A
worker's CPU per tick also holds Faust, Kafka and RocksDB, so this is an upper bound of
what the rules add to a worker.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.common import Bench, prefill, stats
from bench.latency import produce_now
from bench.throughput import gswarm_ingest
from gswarm.config import Settings
from gswarm.feeds.synthetic import synthetic_ticks
from gswarm.kafka import security
from gswarm.runner import WorkerProcess


def _rules() -> str:
    """20 rules over every kind (thresholds that fire on synthetic walks now and then)."""
    out = [
        ("jump", "move", "delta = 0.10\nwithin_s = 60\ncooldown_s = 300"),
        ("jump-5", "move", "delta = 0.05\nwithin_s = 10"),
        ("jump-20", "move", "delta = 0.20\nwithin_s = 600"),
        ("whale", "whale", "volume = 1000\nfactor = 25"),
        ("whale-10x", "whale", "factor = 10\ncooldown_s = 60"),
        ("busy", "spike", "factor = 5"),
        ("busy-3x", "spike", "factor = 3\nmin_ticks = 100"),
        ("band", "alpha", 'band = "outside"\ncooldown_s = 900'),
        ("band-up", "alpha", 'band = "above"'),
        ("rsi-high", "alpha", 'component = "rsi14"\nop = "gt"\nvalue = 0.8'),
        ("rsi-low", "alpha", 'component = "rsi14"\nop = "lt"\nvalue = 0.2'),
        ("macd-up", "alpha", 'component = "macd"\nop = "gt"\nvalue = 0.02'),
        ("fast", "alpha", 'component = "tick_rate"\nop = "ge"\nvalue = 50'),
        ("resolved", "resolved", ""),
    ]
    out += [(f"cross-{int(level * 100)}", "cross", f"level = {level}")
            for level in (0.1, 0.25, 0.5, 0.75, 0.9)]
    out.append(("cross-50-up", "cross", 'level = 0.5\ndirection = "up"'))
    assert len(out) == 20
    return "\n".join(f'[[rule]]\nid = "{rid}"\nkind = "{kind}"\n{body}\n'
                     for rid, kind, body in out)


RULES = _rules()


async def _produce_and_listen(s: Settings, markets: int, rate: float, seconds: float,
                              ) -> tuple[int, list[tuple[float, float]]]:
    """Send ``rate`` ticks/s for ``seconds`` (stamped now) while reading the signals topic;
    return (ticks sent, (tick time, lag) in ms of each signal)."""
    consumer = AIOKafkaConsumer(**security.client_kwargs(s), enable_auto_commit=False)
    await consumer.start()
    lags: list[tuple[float, float]] = []
    tps = [TopicPartition(s.signals_topic, p) for p in range(s.partitions)]
    consumer.assign(tps)
    await consumer.seek_to_end(*tps)

    async def listen() -> None:
        while True:
            batch = await consumer.getmany(timeout_ms=50)
            now = time.time() * 1000
            for records in batch.values():
                for r in records:
                    ts = orjson.loads(r.value)["ts"]
                    lags.append((ts, now - ts))

    listener = asyncio.create_task(listen())
    try:
        sent = await produce_now(s, markets, rate, seconds, seed=13)
        await asyncio.sleep(1.0)  # signals of the last ticks
    finally:
        listener.cancel()
        await consumer.stop()
    return sent, lags


def _percentiles(lags: list[float]) -> dict[str, Any]:
    q = sorted(lags)

    def pct(p: float) -> float | None:
        return round(q[min(len(q) - 1, int(p * len(q)))], 1) if q else None

    return {"signals": len(q), "p50_ms": pct(0.5), "p99_ms": pct(0.99),
            "max_ms": round(q[-1], 1) if q else None}


def latency(bench: Bench, rules: Path, rate: float, seconds: float, markets: int,
            warm_s: float = 0.0) -> dict[str, Any]:
    """Tick -> signal latency of a fresh worker fed ``rate`` ticks/s for ``warm_s +
    seconds``: the figures (``p50_ms``...) are of the ticks sent in the last ``seconds``,
    ``first`` of those sent in the first ``warm_s`` (the worker's markets are new then:
    their windows fill, every market's first signals fire)."""
    s = bench.settings(f"signals-latency-{int(rate)}", signals_rules=str(rules))
    bench.create(s)
    worker = WorkerProcess(s, "worker")
    worker.start()
    try:
        worker.wait_ready()
        started = time.time() * 1000
        sent, lags = asyncio.run(_produce_and_listen(s, markets, rate, warm_s + seconds))
        facts = stats(worker)["arrival_lag_ms"]
    finally:
        worker.stop()
    cut = started + warm_s * 1000
    return {"rate": rate, "seconds": seconds, "warm_s": warm_s, "markets": markets,
            "ticks_sent": sent, **_percentiles([lag for ts, lag in lags if ts >= cut]),
            "first": _percentiles([lag for ts, lag in lags if ts < cut]),
            "facts_arrival_p50_ms": facts["p50"], "facts_arrival_p99_ms": facts["p99"]}


def cost(rules_text: str, markets: int, ticks: int, runs: int, batch: int = 500,
         ) -> dict[str, Any]:
    """CPU per tick of the ingest core without rules and with them (alternating runs)."""
    from collections import defaultdict

    from gswarm.core.ingest import Arrival, MarketRecord, apply_batch
    from gswarm.core.signals import RuleSet, parse_rules
    from gswarm.core.ticks import parse_tick

    stream = [parse_tick(t) for t in synthetic_ticks(markets, ticks, seed=17)]
    batches = []
    for lo in range(0, len(stream), batch):
        groups: dict[str, list[Arrival]] = defaultdict(list)
        for i, t in enumerate(stream[lo:lo + batch], lo):
            groups[t.market].append(Arrival(i, 0, t))
        batches.append(groups)

    def once(rules: RuleSet | None) -> float:
        records: dict[str, bytes] = {}
        start = time.process_time()
        for groups in batches:
            work = [(m, MarketRecord.decode(records[m]) if m in records else None, a)
                    for m, a in groups.items()]
            for (m, _, _), applied in zip(work, apply_batch(work, rules), strict=True):
                assert applied.segment is not None
                records[m] = applied.segment.record
        return (time.process_time() - start) / len(stream) * 1e6

    rules = parse_rules(rules_text)
    out: dict[str, list[float]] = {"without": [], "with_20_rules": []}
    for _ in range(runs):
        out["without"].append(round(once(None), 2))
        out["with_20_rules"].append(round(once(rules), 2))
    best = {k: min(v) for k, v in out.items()}
    return {"markets": markets, "ticks": ticks, "batch": batch, "runs": runs,
            "cpu_us_per_tick": out, "best": best,
            "added_pct": round(100 * (best["with_20_rules"] / best["without"] - 1), 1)}


def worker_cost(bench: Bench, rules: Path, markets: int, ticks: int, runs: int,
                ) -> dict[str, Any]:
    """A lean worker's CPU per tick, ingesting the same pre-filled single ticks with the
    20 rules and with signals off (alternating runs): what the rules add to ingest as a
    whole (Faust, Kafka, RocksDB included), from its first fact to its last."""
    out: dict[str, list[float]] = {"without": [], "with_20_rules": []}
    for i in range(runs):
        for key, path in (("without", ""), ("with_20_rules", str(rules))):
            s = bench.settings(f"signals-cost-{i}-{'on' if path else 'off'}",
                               signals_rules=path)
            bench.create(s)
            prefill(s, markets, ticks, seed=19)
            out[key].append(round(gswarm_ingest(s, ticks)["cpu_s_per_100k_ticks"] * 10, 2))
    median = {k: statistics.median(v) for k, v in out.items()}
    return {"markets": markets, "ticks": ticks, "runs": runs, "cpu_us_per_tick": out,
            "median": median,
            "added_pct": round(100 * (median["with_20_rules"] / median["without"] - 1), 1)}


def run(bench: Bench, rate: float, seconds: float, markets: int, ticks: int, runs: int,
        warm_s: float = 0.0) -> dict[str, Any]:
    rules = bench.home / "signal-rules.toml"
    rules.write_text(RULES)
    return {"rules": 20, "latency": latency(bench, rules, rate, seconds, markets, warm_s),
            "cost": cost(RULES, markets, ticks, runs),
            "worker_cost": worker_cost(bench, rules, markets, ticks, runs)}
