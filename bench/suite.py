"""The benchmark suite: every part on one broker of its own, results in one document.

Run: ``make bench`` (all parts, full sizes), ``gswarm bench [--quick] [PART ...]`` or
``python -m bench.suite [--quick] [PART ...]``. Parts: throughput (single ticks and arrays:
drain floors, Gswarm, the Quix peer, cost per tick), ceiling (a no-op Faust agent
beside the aiokafka drain), latency, failover (supervised and bare, in parts), steady (10
minutes at full load, counting rebalances), recovery, memory,
sketches, queries (query latency at 10k and 100k markets; ``--query-markets`` for
other sizes, e.g. 1,000,000), signals (tick -> signal latency at 1,000 ticks/s, CPU per
tick with and without 20 rules).

Writes ``bench/results/<date>.json`` (``<date>-quick.json`` with ``--quick``), merging
with a same-day document so single parts can be re-run, and, for full runs, rewrites the
generated section of ``BENCHMARKS.md`` (between its ``bench:begin``/``bench:end`` markers).
Full sizes finish in about 35 minutes on 2 cores; ``--quick`` in 2-3.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import ceiling, cluster, latency, queries, signals, sketches, throughput
from bench.common import (
    RESULTS,
    ROOT,
    Bench,
    bench_session,
    machine,
    spread,
    stop_on_sigterm,
    today,
)
from bench.report import render, update_markdown


@dataclass(frozen=True)
class Sizes:
    """How big each part runs."""

    markets: int = 200
    ticks: int = 20_000
    ceiling_messages: int = 100_000
    runs: int = 3
    quix_runs: int = 2
    array_size: int = 10
    wide_markets: int = 100_000
    wide_ticks: int = 200_000
    wide_runs: int = 2
    latency_rates: tuple[float, ...] = (1000.0, 5000.0, 20000.0)
    latency_s: float = 15.0
    failover_runs: int = 5
    #: (supervised, with a standby) pairs the failover part runs
    failover_variants: tuple[tuple[bool, bool], ...] = (
        (True, True), (True, False), (False, True), (False, False))
    failover_prefill: int = 20_000
    steady_s: float = 600.0
    steady_rate: float = 20_000.0
    recovery_ticks: int = 50_000
    memory_s: float = 120.0
    memory_markets: int = 100_000
    sketch_items: int = 1_000_000
    sketch_runs: int = 5
    query_markets: tuple[int, ...] = (10_000, 100_000)
    query_requests: int = 200
    query_compute_markets: tuple[int, ...] = (10_000, 100_000, 1_000_000)
    signals_rate: float = 1000.0
    signals_s: float = 15.0
    #: the signals latency counts the ticks sent after this much of the feed (reported
    #: apart: a fresh worker's markets are all new then)
    signals_warm_s: float = 45.0


FULL = Sizes()
QUICK = Sizes(markets=50, ticks=1_000, ceiling_messages=5_000, runs=1, quix_runs=1,
              latency_rates=(1000.0,), latency_s=3.0, wide_markets=5_000,
              wide_ticks=10_000, wide_runs=1, failover_runs=1, failover_prefill=2_000,
              steady_s=5.0, steady_rate=2_000.0,
              recovery_ticks=2_000, memory_s=6.0, memory_markets=10_000, sketch_items=50_000,
              sketch_runs=2, query_markets=(2_000,), query_requests=20,
              query_compute_markets=(2_000,), signals_s=3.0, signals_warm_s=1.0)


def part_ceiling(b: Bench, z: Sizes) -> dict[str, Any]:
    return {"single": ceiling.run(b, z.markets, z.ceiling_messages, 1, z.runs),
            "arrays": ceiling.run(b, z.markets, z.ceiling_messages * z.array_size,
                                  z.array_size, z.runs)}


def part_single(b: Bench, z: Sizes) -> dict[str, Any]:
    return throughput.run(b, z.markets, z.ticks, 1, z.runs, z.quix_runs, check_state=True)


def part_arrays(b: Bench, z: Sizes) -> dict[str, Any]:
    return throughput.run(b, z.markets, z.ticks, z.array_size, z.runs, z.quix_runs,
                          check_state=True)


def part_wide(b: Bench, z: Sizes) -> dict[str, Any]:
    """Single ticks over many markets: nearly every tick is its market's only one in a
    batch (no Quix peer: at its rate this shape would take many minutes)."""
    return throughput.run(b, z.wide_markets, z.wide_ticks, 1, z.wide_runs, 0, name="wide")


def part_latency(b: Bench, z: Sizes) -> dict[str, Any]:
    return latency.run(b, list(z.latency_rates), z.latency_s, z.markets)


def part_failover(b: Bench, z: Sizes) -> dict[str, Any]:
    """Kill -9 of the leader: supervised (evicted at once) or bare (evicted by a peer's
    probe), with or without a standby, for each pair in ``z.failover_variants``; every
    run's parts (bench/cluster.py)."""
    out: dict[str, Any] = {"prefill": z.failover_prefill}
    for supervised, standbys in z.failover_variants:
        runs = [cluster.failover(b, standbys, supervised, i, z.failover_prefill)
                for i in range(z.failover_runs)]
        key = (f"{'supervised' if supervised else 'bare'}_"
               f"{'with' if standbys else 'without'}_standby")
        out[key] = {"total_s": spread([r["total"] for r in runs]), "runs": runs}
    return out


def part_recovery(b: Bench, z: Sizes) -> dict[str, Any]:
    return cluster.cold_recovery(b, z.recovery_ticks)


def part_steady(b: Bench, z: Sizes) -> dict[str, Any]:
    return cluster.steady(b, z.steady_s, z.steady_rate)


def part_memory(b: Bench, z: Sizes) -> dict[str, Any]:
    return cluster.memory(b, z.memory_s, z.memory_markets)


def part_sketches(b: Bench, z: Sizes) -> dict[str, Any]:
    return sketches.run(z.sketch_items, z.sketch_runs)


def part_queries(b: Bench, z: Sizes) -> dict[str, Any]:
    return queries.run(b, list(z.query_markets), z.query_requests,
                       list(z.query_compute_markets))


def part_signals(b: Bench, z: Sizes) -> dict[str, Any]:
    return signals.run(b, z.signals_rate, z.signals_s, z.markets, z.ticks, z.runs,
                       z.signals_warm_s)


PARTS: dict[str, Callable[[Bench, Sizes], dict[str, Any]]] = {
    "ceiling": part_ceiling,
    "throughput": part_single,
    "arrays": part_arrays,
    "wide": part_wide,
    "latency": part_latency,
    "failover": part_failover,
    "steady": part_steady,
    "recovery": part_recovery,
    "memory": part_memory,
    "sketches": part_sketches,
    "queries": part_queries,
    "signals": part_signals,
}


def run(parts: list[str], sizes: Sizes, quick: bool, log: Callable[[str], None] = print,
        bench: Bench | None = None) -> dict[str, Any]:
    """Run ``parts`` on one broker (``bench``'s, or a new one); the result document."""
    doc: dict[str, Any] = {
        "date": today(), "quick": quick, "machine": machine(),
        "command": "make bench" if not quick else "gswarm bench --quick",
        "sizes": sizes.__dict__, "parts": {}, "part_seconds": {},
    }
    with contextlib.nullcontext(bench) if bench is not None else bench_session() as b:
        for name in parts:
            log(f"bench: {name} ...")
            t = time.monotonic()
            doc["parts"][name] = PARTS[name](b, sizes)
            doc["part_seconds"][name] = round(time.monotonic() - t, 1)
            log(f"bench: {name} done in {doc['part_seconds'][name]:.0f} s")
    return doc


def merge(path: Path, doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` over the same-day document at ``path`` (parts not re-run are kept)."""
    if not path.exists():
        return doc
    old = json.loads(path.read_text())
    return {**doc, "parts": {**old.get("parts", {}), **doc["parts"]},
            "part_seconds": {**old.get("part_seconds", {}), **doc["part_seconds"]}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="gswarm bench", description=__doc__.split("\n\n")[0])
    p.add_argument("parts", nargs="*", metavar="PART",
                   help=f"parts to run (default all): {', '.join(PARTS)}")
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run (2-3 min)")
    p.add_argument("--results", type=Path, default=RESULTS, help="folder for the JSON")
    p.add_argument("--markdown", type=Path, default=None,
                   help="file whose generated section to rewrite (default: BENCHMARKS.md "
                        "for full runs, none for --quick)")
    p.add_argument("--query-markets", default=None, metavar="N,N,...",
                   help="market counts of the queries part (default 10000,100000)")
    args = p.parse_args(argv)
    unknown = [x for x in args.parts if x not in PARTS]
    if unknown:
        p.error(f"unknown part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    parts = args.parts or list(PARTS)
    stop_on_sigterm()
    # producers to a topic created a moment ago retry until its leaders are elected; the
    # retries are expected, their warnings are noise here
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    sizes = QUICK if args.quick else FULL
    if args.query_markets:
        try:
            counts = tuple(int(x) for x in args.query_markets.split(","))
        except ValueError:
            p.error(f"--query-markets: comma-separated integers, got {args.query_markets!r}")
        sizes = dataclasses.replace(sizes, query_markets=counts)
    t = time.monotonic()
    doc = run(parts, sizes, args.quick)
    args.results.mkdir(parents=True, exist_ok=True)
    path = args.results / f"{doc['date']}{'-quick' if args.quick else ''}.json"
    doc = merge(path, doc)
    doc["total_seconds"] = round(time.monotonic() - t, 1)
    path.write_text(json.dumps(doc, indent=2) + "\n")
    table = render(doc)
    markdown = args.markdown or (None if args.quick else ROOT / "BENCHMARKS.md")
    if markdown is not None:
        update_markdown(markdown, table)
    print(table)
    print(f"bench: results in {path}" + (f", table in {markdown}" if markdown else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
