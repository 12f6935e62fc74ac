"""The benchmark suite on tiny sizes: every part yields a well-formed result, the Quix peer
ends in Gswarm's state (so the comparison is of equal work), and the report renders."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench import suite
from bench.cluster import PARTS as FAILOVER_PARTS
from bench.common import Bench
from bench.report import BEGIN, END, render, update_markdown
from gswarm.kafka.broker import LocalBroker

TINY = suite.Sizes(markets=20, ticks=400, ceiling_messages=2_000, runs=1, quix_runs=1, array_size=5,
                   latency_rates=(500.0,), latency_s=2.0, failover_runs=1, steady_s=3.0,
                   # both ways a failover is detected (eviction, peer probe), both ways a
                   # table is recovered (standby, changelog): the other two pairings only
                   # in `make bench`
                   failover_variants=((True, True), (False, False)), signals_s=2.0,
                   steady_rate=1_000.0,
                   failover_prefill=1_000, recovery_ticks=1_000, memory_s=3.0,
                   memory_markets=2_000, sketch_items=5_000, sketch_runs=1,
                   wide_markets=300, wide_ticks=600, wide_runs=1, query_markets=(500,),
                   query_requests=5, query_compute_markets=(1_000,))


@pytest.fixture(scope="module")
def doc(kafka: LocalBroker, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    home = tmp_path_factory.mktemp("bench")
    base = kafka.settings.override(partitions=4, lean=True, log_level="warn")
    return suite.run(list(suite.PARTS), TINY, quick=True, log=lambda _: None,
                     bench=Bench(home, base, kafka))


def _spread_ok(s: dict[str, Any]) -> None:
    assert s["runs"] >= 1 and 0 < s["min"] <= s["median"] <= s["max"]


@pytest.mark.parametrize("part", ["throughput", "arrays"])
def test_throughput_parts_measure_equal_work(doc: dict[str, Any], part: str) -> None:
    t = doc["parts"][part]
    assert t["ticks"] == TINY.ticks
    assert t["messages"] == (TINY.ticks if part == "throughput" else
                             pytest.approx(TINY.ticks / TINY.array_size, rel=0.5))
    assert t["state_differences"] == []  # the peer's final state is Gswarm's
    for consumer in ("aiokafka_drain", "gswarm", "quix", "quix_sketches_in_memory"):
        _spread_ok(t[consumer]["ticks_per_s"])
    run = t["gswarm"]["runs"][0]
    assert run["ticks"] == TINY.ticks  # synthetic ticks are all valid and distinct
    assert t["quix"]["runs"][0]["ticks"] == TINY.ticks
    assert 0 < run["changelog_messages_per_tick"] <= 1
    assert run["changelog_bytes_per_tick"] > 0 and run["cpu_s_per_100k_ticks"] > 0
    assert t["ratio_vs_quix"] > 0 and t["ratio_vs_aiokafka_drain"] > 0


def test_wide_part_runs_without_the_peer(doc: dict[str, Any]) -> None:
    t = doc["parts"]["wide"]
    assert t["markets"] == TINY.wide_markets and t["messages"] == TINY.wide_ticks
    assert t["gswarm"]["runs"][0]["ticks"] == TINY.wide_ticks
    assert t["quix"] is None and t["ratio_vs_quix"] is None
    _spread_ok(t["gswarm"]["ticks_per_s"])


def test_latency_part_reports_percentiles(doc: dict[str, Any]) -> None:
    (r,) = doc["parts"]["latency"]["rates"]
    assert r["sent"] == pytest.approx(TINY.latency_rates[0] * TINY.latency_s, abs=20)
    # whether the worker keeps up depends on the machine: the benchmark reports it, the
    # test checks the figures are consistent
    assert 0 < r["ingested"] <= r["sent"] and r["behind"] == r["sent"] - r["ingested"]
    assert r["kept_up"] == (r["ingested"] >= 0.99 * r["sent"])
    assert 0 < r["facts_measured"] <= r["ingested"]
    assert 0 < r["p50_ms"] <= r["p99_ms"] <= r["max_ms"] < 60_000


def test_queries_part_times_every_query_and_sizes_the_index(doc: dict[str, Any]) -> None:
    q = doc["parts"]["queries"]
    (z,) = q["sizes"]
    assert z["markets"] == 500 and z["fill"]["ticks"] == 1000
    assert set(z["latency_ms"]) == {"latest", "history", "asof", "similar", "screen",
                                    "screen2", "prefix", "hot"}
    for lat in z["latency_ms"].values():
        assert lat["n"] == TINY.query_requests and 0 < lat["p50"] <= lat["p99"] <= lat["max"]
    assert z["vectors"]["markets"] == 500
    assert 92 <= z["vectors"]["bytes_per_market"] <= 1000  # spare rows at small sizes
    assert z["restart"]["first_similar_s"] > 0
    (c,) = q["in_process"]
    assert c["markets"] == 1_000 and 0 < c["similar"]["p50"] <= c["similar"]["p99"]
    assert c["python_bytes_per_market"] > 0



def test_cluster_parts(doc: dict[str, Any]) -> None:
    parts = doc["parts"]
    assert set(parts["failover"]) == {"prefill", "supervised_with_standby",
                                      "bare_without_standby"}
    for key in ("supervised_with_standby", "bare_without_standby"):
        fo = parts["failover"][key]
        _spread_ok(fo["total_s"])
        for run in fo["runs"]:  # the parts add up to the whole, each one measured
            assert all(run[p] >= 0 for p in FAILOVER_PARTS)
            assert run["standby_behind"] >= 0
            assert "restarted_writing" in run if key.startswith("supervised") else True
            assert abs(sum(run[p] for p in FAILOVER_PARTS)
                       - run["total"]) < 0.01
    st = parts["steady"]
    assert st["rebalances"] == [0, 0] and st["alive"] == [True, True]
    assert st["ticks"] > 0
    rec = parts["recovery"]
    assert rec["changelog_records"] > 0 and rec["records_per_s"] > 0
    samples = parts["memory"]["samples"]
    assert samples and all(s["rss_mb"] > 0 and s["disk_mb"] > 0 for s in samples)


def test_signals_part_reports_latency_and_both_costs(doc: dict[str, Any]) -> None:
    g = doc["parts"]["signals"]
    lat = g["latency"]
    assert lat["ticks_sent"] > 0 and lat["signals"] > 0  # the 20 rules fire on the feed
    assert 0 < lat["p50_ms"] <= lat["p99_ms"] <= lat["max_ms"]
    for cost in (g["cost"], g["worker_cost"]):
        assert set(cost["cpu_us_per_tick"]) == {"without", "with_20_rules"}
        assert all(v > 0 for runs in cost["cpu_us_per_tick"].values() for v in runs)
    assert len(g["worker_cost"]["cpu_us_per_tick"]["without"]) == TINY.runs


def test_sketch_part(doc: dict[str, Any]) -> None:
    kernels = doc["parts"]["sketches"]["kernels"]
    assert len(kernels) == 5 and all(k["items_per_s"] > 0 for k in kernels.values())


def test_ceiling_part_sees_every_message_once(doc: dict[str, Any]) -> None:
    for shape in ("single", "arrays"):
        c = doc["parts"]["ceiling"][shape]
        assert c["lost_or_twice"] == 0
        faust = c["faust_per_message"] or {"runs": []}
        for run in c["noop_agent"]["runs"] + faust["runs"]:
            assert run["messages"] == c["messages"]
            assert run["ticks"] == c["ticks"]  # every tick of every array message
        _spread_ok(c["noop_agent"]["messages_per_s"])
        _spread_ok(c["aiokafka_drain"]["messages_per_s"])


def test_report_renders_every_part_and_replaces_only_its_section(
        doc: dict[str, Any], tmp_path: Path) -> None:
    doc = json.loads(json.dumps(doc))  # what is written to and read from results/
    table = render(doc)
    for heading in ("The delivery ceiling", "Ingest throughput, one tick per message",
                    "arrays of 5 ticks", "Produce -> queryable latency", "cold recovery",
                    "Sketch kernels", "ticks/s >= 10,000 (one tick per message, 100,000 markets)",
                    "CPU <= 5 s per 100k single ticks", "| target (DESIGN.md) | measured | met |"):
        assert heading in table
    md = tmp_path / "BENCHMARKS.md"
    md.write_text("# Benchmarks\n\nhand-written notes\n")
    update_markdown(md, table)
    update_markdown(md, "second\n")
    text = md.read_text()
    assert text.count(BEGIN) == 1 and text.count(END) == 1
    assert "hand-written notes" in text and "second" in text and "Sketch kernels" not in text


def test_suite_command_rejects_unknown_parts(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        suite.main(["nope"])
    assert exc.value.code == 2
    assert "unknown part(s) nope" in capsys.readouterr().err
