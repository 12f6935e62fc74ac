"""The chaos soak: supervised workers on a 3-node cluster, killed at seeded moments, then a
cold recovery compared with a calm run bit for bit (issue 15).

``gswarm bench chaos [--seconds 300] [--worker-kills 20] [--broker-kills 2] [--seed 1]``
(``make chaos``). What happens:

1. A local 3-node KRaft cluster (:class:`~gswarm.kafka.broker.LocalCluster`: replication 3,
   ``min.insync.replicas=2``) on free loopback ports; two apps on it, ``calm`` and
   ``chaos``, with the same seeded stream of messages: single ticks, per-market arrays,
   duplicate bets (a bet sent again later) and bad messages (not JSON, a probability out of
   range), in three phases. Phase A is old event time; phase B starts one retention window
   later with one tick per market, so when the prune request (a control message to every
   partition, placed by the feed at the same position for both apps, after phase A is
   processed) drops what is older than the retention window it drops exactly phase A's
   segments, whatever the batching, and nothing of phase B.
2. ``calm``: one lean worker, nothing happens. ``chaos``: 3 workers under the supervisor
   (``gswarm cluster``), the feed at ``--rate`` ticks/s for ``--seconds``, SIGKILLs of
   random workers at seeded random moments (the supervisor restarts them) and SIGKILLs of
   broker nodes (never two down at once; each back after a few seconds).
3. The supervisor and its workers stop; a fresh worker with an empty data dir recovers the
   chaos app from the changelogs alone. Its answers must equal the calm worker's: every
   market's latest values (alpha included) and history, every partition's sketch bytes;
   the dead-letter topic must hold exactly the bad messages (each origin once at least;
   copies are counted), and no worker may have logged a skipped offset.

Results go to ``bench/results/<date>-chaos.json`` (with the kill schedule); the working
folder (cluster data, every worker's log) is kept when the soak fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition

from bench.common import stop_on_sigterm
from gswarm import cluster as supervisor
from gswarm.config import PROJECT_ROOT, Settings
from gswarm.feeds.synthetic import synthetic_ticks
from gswarm.kafka import topics
from gswarm.kafka.broker import LocalCluster
from gswarm.ports import free_port
from gswarm.runner import WorkerProcess
from gswarm.stream.pipeline import control_message

RESULTS = PROJECT_ROOT / "bench" / "results"
RETENTION_S = 600.0
PHASE_A_SHARE = 0.3  # of the stream, before the prune
MARKETS = 300
WORKER_WAIT_S = 30.0  # a scheduled kill waits this long for a worker to be up
Message = tuple[bytes, bytes, dict[str, bytes] | None]  # key, value, headers


@dataclass
class Stream:
    """The messages of a soak, in send order, and what the checks need to know."""

    phase_a: list[Message]
    phase_b: list[Message]  # the prune request goes between the two parts of phase B
    phase_c: list[Message]
    bad: list[bytes]  # values of the bad messages
    ticks: int
    markets: list[str]


def make_stream(seed: int, ticks: int) -> Stream:
    """Seeded messages: ~80 % single ticks, arrays of 2-5 ticks of one market, 2 % duplicate
    bets, 0.5 % bad messages."""
    rng = random.Random(seed)
    start = 1_700_000_000_000
    n_a = int(ticks * PHASE_A_SHARE)
    a = list(synthetic_ticks(MARKETS, n_a, seed, start_ms=start, rate=1000.0))
    gap = start + n_a + int(2 * RETENTION_S * 1000)
    b = list(synthetic_ticks(MARKETS, ticks - n_a, seed + 1, start_ms=gap, rate=1000.0))
    markets = sorted({t["market"] for t in a + b})
    bad: list[bytes] = []

    def messages(docs: list[dict[str, Any]]) -> list[Message]:
        out: list[Message] = []
        sent: list[dict[str, Any]] = []
        i = 0
        while i < len(docs):
            roll = rng.random()
            doc = docs[i]
            key = doc["market"].encode()
            if roll < 0.005:
                value = rng.choice([b"{not json", orjson.dumps({**doc, "prob": 7.5})])
                bad.append(value)
                out.append((key, value, None))
            elif roll < 0.025 and sent:
                again = rng.choice(sent[-500:])  # a bet sent again (a restarted feed)
                out.append((again["market"].encode(), orjson.dumps(again), None))
            elif roll < 0.2:
                group = [doc] + [d for d in docs[i + 1:i + 5] if d["market"] == doc["market"]]
                out.append((key, orjson.dumps(group), None))
                sent += group
                i += len(group)
                continue
            else:
                out.append((key, orjson.dumps(doc), None))
                sent.append(doc)
            i += 1
        return out

    # phase B starts with one tick of every market, so each market's newest segment is
    # in phase B when the prune comes
    roll_call = list(synthetic_ticks(len(markets), len(markets), seed + 2, start_ms=gap - 1))
    firsts = [{**t, "market": m, "id": f"roll-{m}"} for t, m in zip(roll_call, markets,
                                                                     strict=True)]
    split = len(b) // 3
    return Stream(messages(a), messages(firsts + b[:split]), messages(b[split:]), bad,
                  ticks + len(markets), markets)


def prune_request(partitions: int) -> list[tuple[int, bytes, dict[str, bytes]]]:
    value, headers = control_message("prune", retention_ms=int(RETENTION_S * 1000))
    return [(p, value, headers) for p in range(partitions)]


async def send(s: Settings, messages: Iterable[Message], rate: float | None,
               stop: threading.Event | None = None) -> int:
    """Send ``messages`` in order (acks=all, idempotent) at ``rate`` messages/s."""
    producer = AIOKafkaProducer(bootstrap_servers=s.broker, acks="all",
                                enable_idempotence=True, linger_ms=5,
                                request_timeout_ms=60_000)
    await producer.start()
    sent = 0
    began = time.monotonic()
    try:
        futures = []
        for key, value, headers in messages:
            futures.append(await producer.send(
                s.tick_topic, value, key=key,
                headers=list(headers.items()) if headers else None))
            sent += 1
            if rate and sent % 50 == 0:
                ahead = sent / rate - (time.monotonic() - began)
                if ahead > 0:
                    await asyncio.sleep(ahead)
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return sent


async def send_prune(s: Settings) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=s.broker, acks="all")
    await producer.start()
    try:
        for partition, value, headers in prune_request(s.partitions):
            await producer.send_and_wait(s.tick_topic, value, partition=partition,
                                         headers=list(headers.items()))
    finally:
        await producer.stop()


async def behind(s: Settings) -> int:
    """Messages of the tick topic not yet committed by the app's consumer group."""
    admin = AIOKafkaAdminClient(bootstrap_servers=s.broker)
    consumer = AIOKafkaConsumer(bootstrap_servers=s.broker, group_id=None)
    await admin.start()
    await consumer.start()
    try:
        tps = [TopicPartition(s.tick_topic, p) for p in range(s.partitions)]
        ends = await consumer.end_offsets(tps)
        done = await admin.list_consumer_group_offsets(s.app_id)
        return sum(ends[tp] - (done[tp].offset if tp in done and done[tp].offset >= 0 else 0)
                   for tp in tps)
    finally:
        await consumer.stop()
        await admin.close()


def wait_for(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if pred():
                return
        except Exception:  # a broker or worker away for a moment: ask again
            pass
        time.sleep(0.5)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def caught_up(s: Settings, timeout: float = 600.0) -> None:
    wait_for(lambda: asyncio.run(behind(s)) == 0, timeout, f"{s.app_id} to commit everything")


async def dead_letters(s: Settings) -> list[tuple[str, int, int, bytes]]:
    """(reason, origin partition, origin offset, value) of every dead letter."""
    consumer = AIOKafkaConsumer(s.deadletter_topic, bootstrap_servers=s.broker,
                                group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    out: list[tuple[str, int, int, bytes]] = []
    try:
        tps = [TopicPartition(s.deadletter_topic, p)
               for p in consumer.partitions_for_topic(s.deadletter_topic) or ()]
        ends = await consumer.end_offsets(tps)
        total = sum(ends.values())
        while len(out) < total:
            batch = await consumer.getmany(timeout_ms=5000)
            for records in batch.values():
                for r in records:
                    h = {k: v.decode() for k, v in r.headers}
                    out.append((h["gswarm-reason"], int(h["gswarm-partition"]),
                                int(h["gswarm-offset"]), r.value or b""))
    finally:
        await consumer.stop()
    return out


@dataclass
class Chaos:
    """The kill schedule's runner (a thread while the feed runs)."""

    s: Settings
    cluster: LocalCluster
    rng: random.Random
    seconds: float
    worker_kills: int
    broker_kills: int
    log: Callable[[str], None]
    events: list[dict[str, Any]] = field(default_factory=list)
    killed: set[int] = field(default_factory=set)
    stop: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None

    def schedule(self) -> list[tuple[float, str]]:
        moments = [(self.rng.uniform(0.05, 0.9) * self.seconds, "worker")
                   for _ in range(self.worker_kills)]
        # broker kills apart from each other (one down at a time, back before the next)
        slots = sorted(self.rng.sample(range(1, 10), self.broker_kills))
        moments += [(slot / 10 * self.seconds, "broker") for slot in slots]
        return sorted(moments)

    def run(self) -> None:
        try:
            began = time.monotonic()
            for at, kind in self.schedule():
                if self.stop.wait(max(0.0, at - (time.monotonic() - began))):
                    return
                if kind == "worker":
                    self.kill_worker(time.monotonic() - began)
                else:
                    self.kill_broker(time.monotonic() - began)
        except BaseException as exc:
            self.error = exc

    def kill_worker(self, at: float) -> None:
        """Kill -9 a random live worker; if none is up (all being restarted), the first
        to come back, so every scheduled kill happens."""
        deadline = time.monotonic() + WORKER_WAIT_S
        while time.monotonic() < deadline and not self.stop.is_set():
            state = supervisor.read_state(self.s)
            # the state may still list a worker killed a moment ago (not yet restarted)
            alive = [w for w in (state or {}).get("workers", [])
                     if w.get("pid") and int(w["pid"]) not in self.killed]
            if alive:
                target = self.rng.choice(alive)
                try:
                    os.kill(int(target["pid"]), signal.SIGKILL)
                except ProcessLookupError:  # died since the state was written
                    pass
                else:
                    self.killed.add(int(target["pid"]))
                    self.events.append({"t": round(at, 1), "kill": target["name"],
                                        "pid": target["pid"]})
                    self.log(f"chaos: {at:6.1f}s kill -9 {target['name']} "
                             f"(pid {target['pid']})")
                    return
            time.sleep(0.2)
        self.log(f"chaos: {at:6.1f}s no live worker to kill within {WORKER_WAIT_S:.0f} s")

    def kill_broker(self, at: float) -> None:
        node = self.rng.randrange(len(self.cluster.nodes))
        pid = self.cluster.kill_node(node)
        self.log(f"chaos: {at:6.1f}s kill -9 broker node {node} (pid {pid})")
        time.sleep(5.0)
        began = time.monotonic()
        self.cluster.start_node(node)
        back = time.monotonic() - began
        self.events.append({"t": round(at, 1), "kill_broker": node, "pid": pid,
                            "restart_s": round(back, 1)})
        self.log(f"chaos: broker node {node} back after {back:.1f}s")


def digests(w: WorkerProcess) -> dict[str, Any]:
    parts = w.get("/api/sketches/local")["partitions"]
    return {p: (v["sha256"], v["ticks"], v["last_offset"]) for p, v in parts.items()}


def differences(fresh: WorkerProcess, calm: WorkerProcess, markets: list[str]) -> list[str]:
    """What differs between the two workers' answers (empty: bit for bit equal)."""
    found = []
    if digests(fresh) != digests(calm):
        found.append(f"sketches: {digests(fresh)} != {digests(calm)}")
    for m in markets:
        a, b = fresh.get(f"/api/markets/{m}"), calm.get(f"/api/markets/{m}")
        if a != b:
            found.append(f"{m} latest: {a} != {b}")
        for attr in ("tick/probability", "market/alpha"):
            ha, hb = history(fresh, m, attr), history(calm, m, attr)
            if ha != hb:
                found.append(f"{m} {attr} history: {len(ha)} != {len(hb)} points")
    return found


def history(w: WorkerProcess, market: str, attr: str) -> list[Any]:
    """A market's whole series of ``attr``, page by page."""
    points: list[Any] = []
    query = f"attr={attr}&limit=5000"
    while True:
        page = w.get(f"/api/markets/{market}/history?{query}")
        points += page["points"]
        if not page["next"]:
            return points
        query = (f"attr={attr}&limit=5000&from={page['next']['from']}"
                 f"&after_seq={page['next']['after_seq']}")


def skipped_offsets(logs: Iterable[Path]) -> int:
    return sum(p.read_text(errors="replace").count("were never delivered")
               for p in logs if p.exists())


def soak(home: Path, seconds: float, worker_kills: int, broker_kills: int, seed: int,
         rate: float, log: Callable[[str], None] = print) -> dict[str, Any]:
    """One soak (see the module doc); returns its figures, raises if the answers differ."""
    kport, cport = free_port(), free_port()
    base = Settings.from_env({}).override(
        kafka_dir=home / "kafka", kafka_port=kport, kafka_controller_port=cport,
        partitions=6, log_level="info", prune_interval_s=3600.0,
        retention_s=RETENTION_S)
    cluster = LocalCluster(base, 3)
    t0 = time.monotonic()
    cluster.start()
    log(f"chaos: 3 brokers up in {time.monotonic() - t0:.0f}s: {cluster.bootstrap}")
    s0 = cluster.client_settings()
    calm_s = s0.override(app_id="calm", data_dir=home / "calm", web_port=free_port(),
                         lean=True)
    chaos_s = s0.override(app_id="chaos", data_dir=home / "chaos", web_port=free_port(span=3))
    stream = make_stream(seed, int(seconds * rate))
    n_a, n_b, n_c = len(stream.phase_a), len(stream.phase_b), len(stream.phase_c)
    workers: list[WorkerProcess] = []
    try:
        for s in (calm_s, chaos_s):
            asyncio.run(topics.apply(s))
        # the calm run, as fast as it goes
        calm = WorkerProcess(calm_s, "calm")
        workers.append(calm)
        calm.start()
        calm.wait_ready(timeout=180)
        for phase in (stream.phase_a, stream.phase_b):
            asyncio.run(send(calm_s, phase, None))
            caught_up(calm_s)
        asyncio.run(send_prune(calm_s))
        asyncio.run(send(calm_s, stream.phase_c, None))
        caught_up(calm_s)
        log(f"chaos: calm run done ({n_a + n_b + n_c} messages)")

        supervisor.up(chaos_s, 3, timeout=300)
        chaos = Chaos(chaos_s, cluster, random.Random(seed), seconds, worker_kills,
                      broker_kills, log)
        killer = threading.Thread(target=chaos.run, daemon=True)
        began = time.monotonic()
        killer.start()
        total = n_a + n_b + n_c
        asyncio.run(send(chaos_s, stream.phase_a, total / seconds))
        caught_up(chaos_s)  # phase A processed before phase B's first tick
        asyncio.run(send(chaos_s, stream.phase_b, total / seconds))
        caught_up(chaos_s)
        asyncio.run(send_prune(chaos_s))
        asyncio.run(send(chaos_s, stream.phase_c, total / seconds))
        fed_s = time.monotonic() - began
        killer.join()
        if chaos.error is not None:
            raise chaos.error
        caught_up(chaos_s)
        state = supervisor.read_state(chaos_s) or {}
        restarts = sum(w.get("restarts", 0) for w in state.get("workers", []))
        supervisor.down(chaos_s)
        log(f"chaos: fed in {fed_s:.0f}s; {restarts} worker restarts; cold recovery next")

        shutil.rmtree(chaos_s.data_dir / "fresh", ignore_errors=True)
        fresh = WorkerProcess(chaos_s.override(web_port=free_port(), lean=True), "fresh")
        workers.append(fresh)
        t_recover = time.monotonic()
        fresh.start()
        fresh.wait_ready(timeout=600)
        recover_s = time.monotonic() - t_recover

        diffs = differences(fresh, calm, stream.markets)
        letters = asyncio.run(dead_letters(chaos_s))
        origins = Counter((p, o) for _, p, o, _ in letters)
        calm_origins = {(p, o) for _, p, o, _ in asyncio.run(dead_letters(calm_s))}
        if set(origins) != calm_origins or len(origins) != len(stream.bad):
            diffs.append(f"dead letters: {len(origins)} origins ({len(calm_origins)} in the "
                         f"calm run), {len(stream.bad)} bad messages sent")
        logs = [*(chaos_s.data_dir / "cluster").glob("*.log"), fresh.log_path]
        skipped = skipped_offsets(logs)
        if skipped:
            diffs.append(f"{skipped} skipped-offset warnings in the workers' logs")
        result = {
            "seed": seed, "seconds": seconds, "rate": rate, "ticks": stream.ticks,
            "messages": total, "bad": len(stream.bad),
            "worker_kills": sum(1 for e in chaos.events if "kill" in e),
            "broker_kills": sum(1 for e in chaos.events if "kill_broker" in e),
            "worker_restarts": restarts, "fed_s": round(fed_s, 1),
            "recover_s": round(recover_s, 1),
            "dead_letters": len(letters), "dead_letter_copies": len(letters) - len(origins),
            "offsets_skipped": skipped, "differences": diffs[:20],
            "schedule": chaos.events,
        }
        log(f"chaos: {json.dumps({k: v for k, v in result.items() if k != 'schedule'})}")
        if diffs:
            raise AssertionError(f"the cold recovery differs from the calm run: {diffs[:5]}")
        return result
    finally:
        supervisor.down(chaos_s)
        for w in workers:
            w.stop(timeout=20)
        cluster.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gswarm bench chaos", description=__doc__.split(
        "\n\n")[0])
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--rate", type=float, default=2000.0, help="ticks per second")
    parser.add_argument("--worker-kills", type=int, default=20)
    parser.add_argument("--broker-kills", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args(argv)
    stop_on_sigterm()
    (PROJECT_ROOT / ".gswarm" / "bench").mkdir(parents=True, exist_ok=True)
    results = []
    for run in range(args.runs):
        home = Path(tempfile.mkdtemp(prefix=time.strftime("%Y%m%d-%H%M%S-chaos-"),
                                     dir=PROJECT_ROOT / ".gswarm" / "bench"))
        try:
            results.append(soak(home, args.seconds, args.worker_kills, args.broker_kills,
                                args.seed + run, args.rate))
        except BaseException:
            print(f"chaos: failed; logs kept in {home}", file=sys.stderr)
            raise
        shutil.rmtree(home, ignore_errors=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{time.strftime('%Y-%m-%d')}-chaos.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"chaos: {len(results)} soak(s) passed; results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
