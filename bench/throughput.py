"""Ingest throughput on a pre-filled tick topic: drain floor, Gswarm, the Quix peer.

Every run gets its own topic, filled with the same synthetic ticks (fixed seed) before the
consumer starts, so each consumer reads a backlog as fast as it can:

* drain floor: a bare aiokafka consumer that decodes each value with orjson and does
  nothing else; kcat (if installed) writing values to /dev/null;
* Gswarm: one lean worker (validation, facts, alpha, sketches, changelogs), timed from its
  first to its last fact written and acknowledged by the changelog;
* the peer: ``bench/quix_peer.py``, the same work in Quix Streams.

Rates are ticks per second. Cost per tick (changelog messages and bytes, CPU) is read
from the Gswarm runs.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from bench.common import (
    ROOT,
    Bench,
    changelog_topics,
    end_offsets,
    prefill,
    spread,
    stats,
    wait_for,
)
from gswarm.config import Settings
from gswarm.kafka import security
from gswarm.runner import WorkerProcess

QUIX_PEER = ROOT / "bench" / "quix_peer.py"


async def _aiokafka_drain(s: Settings, items: int) -> dict[str, Any]:
    consumer = AIOKafkaConsumer(
        s.tick_topic, **security.client_kwargs(s), group_id=None,
        auto_offset_reset="earliest", enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 2**20, fetch_max_bytes=32 * 2**20)
    await consumer.start()
    try:
        seen = messages = 0
        first: float | None = None
        while seen < items:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            if first is None and batch:
                first = time.perf_counter()
            for records in batch.values():
                messages += len(records)
                for r in records:
                    doc = orjson.loads(r.value)
                    seen += len(doc) if isinstance(doc, list) else 1
        assert first is not None
        seconds = time.perf_counter() - first
        return {"ticks": seen, "messages": messages, "seconds": seconds,
                "ticks_per_s": seen / seconds, "messages_per_s": messages / seconds}
    finally:
        await consumer.stop()


def aiokafka_drain(s: Settings, items: int) -> dict[str, Any]:
    """A bare aiokafka consumer decoding every value: the ceiling for Python consumers."""
    return asyncio.run(_aiokafka_drain(s, items))


def kcat_drain(s: Settings, messages: int, items: int) -> dict[str, Any] | None:
    """kcat reading the topic to its end (process start included), or None without kcat."""
    kcat = shutil.which("kcat")
    if kcat is None:
        return None
    with tempfile.NamedTemporaryFile("w", suffix=".conf") as conf:  # mode 0600
        conf.write("".join(f"{k}={v}\n" for k, v in security.kcat_config(s).items()))
        conf.flush()
        t = time.perf_counter()
        out = subprocess.run(
            [kcat, "-C", "-F", conf.name, "-t", s.tick_topic, "-o", "beginning", "-e", "-q",
             "-c", str(messages), "-f", "%s\n", "-X", "fetch.message.max.bytes=4194304"],
            capture_output=True, timeout=300, check=True)
        seconds = time.perf_counter() - t
    lines = out.stdout.count(b"\n")
    if lines < messages:
        raise RuntimeError(f"kcat read {lines} of {messages} messages: {out.stderr[-500:]!r}")
    return {"ticks": items, "seconds": seconds, "ticks_per_s": items / seconds}


async def _changelog_cost(s: Settings) -> dict[str, int]:
    """Messages and key+value bytes in the worker's changelog topics."""
    consumer = AIOKafkaConsumer(**security.client_kwargs(s), group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for topic in changelog_topics(s)
               for p in range(s.partitions)]
        ends = await consumer.end_offsets(tps)
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        todo = {tp: end for tp, end in ends.items() if end > 0}
        messages = sum(todo.values())
        size = 0
        while todo:
            batch = await consumer.getmany(*todo, timeout_ms=1000, max_records=10_000)
            for tp, records in batch.items():
                for r in records:
                    size += len(r.key or b"") + len(r.value or b"")
                if records and records[-1].offset + 1 >= todo[tp]:
                    del todo[tp]
        return {"messages": messages, "bytes": size}
    finally:
        await consumer.stop()


def gswarm_ingest(s: Settings, items: int) -> dict[str, Any]:
    """One lean worker ingests the pre-filled topic; rate from its first to last fact."""
    worker = WorkerProcess(s, "worker")
    worker.start()
    try:
        # items count redelivered messages again: the end is when nothing is left to process
        wait_for(lambda: (d := stats(worker))["items"] >= items and len(d["behind"]) == s.partitions
                 and d["behind_total"] == 0, 600, "all ticks ingested", every=0.5)
        doc = stats(worker)
    finally:
        worker.stop()
    cost = asyncio.run(_changelog_cost(s))
    ticks = doc["ticks"]
    seconds = doc["last_fact_time"] - doc["first_fact_time"]
    cpu = doc["last_fact_cpu"] - doc["first_fact_cpu"]
    return {
        "ticks": ticks, "seconds": seconds, "ticks_per_s": ticks / seconds,
        "batches": doc["batches"], "segments": doc["segments"],
        "changelog_messages": cost["messages"], "changelog_bytes": cost["bytes"],
        "changelog_messages_per_tick": cost["messages"] / ticks,
        "changelog_bytes_per_tick": cost["bytes"] / ticks,
        "cpu_s_per_100k_ticks": cpu / ticks * 100_000,
    }


def gswarm_state(s: Settings, markets: list[str]) -> dict[str, Any]:
    """A finished run's state, for comparison with the peer's: run a worker to read it."""
    worker = WorkerProcess(s, "worker")
    worker.start()
    try:
        worker.wait_ready()
        # the tick state only: metadata (`meta`, from live feeds) is not part of this work
        latest = {m: {k: v for k, v in worker.get(f"/api/markets/{m}").items() if k != "meta"}
                  for m in markets}
        parts = worker.get("/api/sketches/local")["partitions"]
    finally:
        worker.stop()
    return {"latest": latest,
            "sketches": {p: {k: v[k] for k in ("sha256", "ticks", "last_offset")}
                         for p, v in parts.items()}}


def quix_peer(s: Settings, items: int, home: Path, persist: bool = True,
              name: str = "quix") -> dict[str, Any]:
    """The Quix Streams peer on the same topic (its own consumer group and state)."""
    out = home / f"{name}.json"
    log = home / f"{name}.log"
    cmd = [sys.executable, str(QUIX_PEER), "--broker", s.broker, "--topic", s.tick_topic,
           "--deadletters", f"{s.app_id}-{name}-deadletters", "--group", f"{s.app_id}-{name}",
           "--partitions", str(s.partitions), "--expect", str(items), "--out", str(out),
           "--state-dir", str(home / f"{name}-state"),
           "--commit-interval", str(s.commit_interval_s),
           "--max-bytes", str(s.max_message_bytes),
           "--sketch-persist", "every" if persist else "never"]
    with log.open("wb") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT,
                                start_new_session=True, env=_pythonpath())
        try:
            rc = proc.wait(timeout=900)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    if rc != 0:
        raise RuntimeError(f"quix peer exited with {rc}; see {log}:\n{log.read_text()[-2000:]}")
    doc = json.loads(out.read_text())
    seconds = doc["last_time"] - doc["first_time"]
    return {
        "ticks": doc["ticks"], "items": doc["items"], "seconds": seconds,
        "ticks_per_s": doc["ticks"] / seconds, "datoms": doc["datoms"],
        "cpu_s_per_100k_ticks": (doc["last_cpu"] - doc["first_cpu"]) / doc["ticks"] * 100_000,
        "state": {"latest": doc["latest"], "sketches": doc["sketches"]},
    }


def _pythonpath() -> dict[str, str]:
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def state_difference(gswarm: dict[str, Any], peer: dict[str, Any]) -> list[str]:
    """What differs between two final states (empty: equal work, equal results)."""
    diffs = []
    for market, latest in gswarm["latest"].items():
        if peer["latest"].get(market) != latest:
            diffs.append(f"market {market}: {latest} != {peer['latest'].get(market)}")
    if gswarm["sketches"] != peer["sketches"]:
        diffs.append(f"sketches: {gswarm['sketches']} != {peer['sketches']}")
    return diffs


def digest(doc: Any) -> str:
    return hashlib.sha256(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def run(bench: Bench, markets: int, ticks: int, array_size: int, runs: int,
        quix_runs: int, check_state: bool = False, name: str = "") -> dict[str, Any]:
    """All throughput figures for one message shape (single ticks or arrays).

    ``name`` tells runs of the same shape apart (their topics and consumer groups)."""
    shape = "single" if array_size == 1 else f"array{array_size}"
    floor, kcat, ours, peer, peer_mem = [], [], [], [], []
    equal: list[str] | None = None
    messages = 0
    for i in range(runs):
        s = bench.settings(f"{name or shape}-{i}")
        bench.create(s)
        prefill(s, markets, ticks, array_size)
        if i == 0:
            messages = asyncio.run(end_offsets(s, [s.tick_topic]))
        floor.append(aiokafka_drain(s, ticks))
        k = kcat_drain(s, messages, ticks)
        if k is not None:
            kcat.append(k)
        ours.append(gswarm_ingest(s, ticks))
        if i < quix_runs:
            peer.append(quix_peer(s, ticks, s.data_dir))
            if check_state and i == 0:
                expected = gswarm_state(s, sorted(peer[-1]["state"]["latest"]))
                equal = state_difference(expected, peer[-1]["state"])
            if i == 0:
                peer_mem.append(quix_peer(s, ticks, s.data_dir, persist=False,
                                          name="quix-mem"))
    for p in peer + peer_mem:
        p.pop("state")
    rate = spread([r["ticks_per_s"] for r in ours])
    floor_rate = spread([r["ticks_per_s"] for r in floor])
    peer_rate = spread([r["ticks_per_s"] for r in peer]) if peer else None
    out: dict[str, Any] = {
        "shape": shape, "markets": markets, "ticks": ticks, "messages": messages,
        "aiokafka_drain": {"ticks_per_s": floor_rate, "runs": floor},
        "kcat_drain": ({"ticks_per_s": spread([r["ticks_per_s"] for r in kcat]), "runs": kcat}
                       if kcat else None),
        "gswarm": {"ticks_per_s": rate, "runs": ours,
                   "changelog_messages_per_tick": spread(
                       [r["changelog_messages_per_tick"] for r in ours]),
                   "changelog_bytes_per_tick": spread(
                       [r["changelog_bytes_per_tick"] for r in ours]),
                   "cpu_s_per_100k_ticks": spread([r["cpu_s_per_100k_ticks"] for r in ours])},
        "quix": {"ticks_per_s": peer_rate, "runs": peer,
                 "cpu_s_per_100k_ticks": spread([r["cpu_s_per_100k_ticks"] for r in peer])}
        if peer else None,
        "quix_sketches_in_memory": {"ticks_per_s": spread([r["ticks_per_s"] for r in peer_mem]),
                                    "runs": peer_mem} if peer_mem else None,
        "ratio_vs_quix": rate["median"] / peer_rate["median"] if peer_rate else None,
        "ratio_vs_aiokafka_drain": rate["median"] / floor_rate["median"],
    }
    if check_state:
        out["state_differences"] = equal
    return out
