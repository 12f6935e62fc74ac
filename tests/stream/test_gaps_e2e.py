"""The known ways a crash could break "no tick lost or counted twice" (issue 15), each
reproduced at its crash point on the real broker and compared with a calm run.

The crash point is made deterministic with a commit interval of an hour: a worker killed
with SIGKILL has then committed nothing, its local RocksDB holds every market record and
segment it wrote (the facts table is written per batch), its sketches were never persisted
(they are written before a commit), and every message comes again when it restarts.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from gswarm.config import Settings
from gswarm.feeds.synthetic import synthetic_ticks
from gswarm.kafka import topics
from gswarm.ports import free_port
from gswarm.runner import WorkerProcess
from gswarm.stream.pipeline import control_message
from tests.stream.compare import same_state, sketch_digests
from tests.stream.conftest import (
    produce_messages,
    produce_ticks,
    set_max_message_bytes,
    wait_consumed,
    wait_for,
)

pytestmark = pytest.mark.timeout(400)
HOUR_S = 3600.0


def make(settings_factory: Callable[..., Settings], **kw: Any) -> Settings:
    kw.setdefault("prune_interval_s", HOUR_S)  # prunes come from the test only
    s = settings_factory(web_port=free_port(), partitions=2, **kw)
    asyncio.run(topics.apply(s))
    return s


def never_commits(settings_factory: Callable[..., Settings], **kw: Any) -> Settings:
    return make(settings_factory, commit_interval_s=HOUR_S, **kw)


def crash_and_restart(worker: WorkerProcess, workers: Callable[..., WorkerProcess],
                      messages: int) -> WorkerProcess:
    """SIGKILL ``worker``, start it again on its own data dir, wait for the redelivery."""
    worker.kill()
    again = workers(worker.settings, worker.name)
    wait_consumed(again, messages)
    return again


def send_prune(settings: Settings, retention_ms: int) -> None:
    """The leader's prune request, sent by the test (in order with the ticks)."""

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=settings.broker, acks="all")
        await producer.start()
        try:
            value, headers = control_message("prune", retention_ms=retention_ms)
            for partition in range(settings.partitions):
                await producer.send_and_wait(settings.tick_topic, value, partition=partition,
                                             headers=list(headers.items()))
        finally:
            await producer.stop()

    asyncio.run(send())


def with_duplicate_bets(ticks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every 7th bet sent again three messages later (a restarted feed resending)."""
    out: list[dict[str, Any]] = []
    pending: dict[int, dict[str, Any]] = {}
    for i, tick in enumerate(ticks):
        out.append(tick)
        if i % 7 == 0:
            pending[i + 3] = tick
        if i in pending:
            out.append(pending.pop(i))
    return out


def test_duplicate_bet_redelivered_after_a_crash_is_counted_once(
    settings_factory: Callable[..., Settings], workers: Callable[..., WorkerProcess],
) -> None:
    """Gap 3: the market records survive the crash, the sketches do not; the redelivered
    duplicate bets must not then be counted by the sketches (the calm run never did)."""
    ticks = with_duplicate_bets(list(synthetic_ticks(markets=6, count=700, seed=41)))
    calm_s = make(settings_factory)
    calm = workers(calm_s, "calm")
    produce_ticks(calm_s, ticks)
    assert wait_consumed(calm, len(ticks))["duplicates"] == 100

    s = never_commits(settings_factory)
    w = workers(s, "w1")
    produce_ticks(s, ticks)
    wait_consumed(w, len(ticks))
    w = crash_and_restart(w, workers, len(ticks))
    assert sketch_digests(w) == sketch_digests(calm)
    same_state(w, calm, sorted({t["market"] for t in ticks}))


START_MS = 1_700_000_000_000
RETENTION_MS = 3_600_000  # everything of the first wave but each market's newest segment
OLD = list(synthetic_ticks(markets=4, count=300, seed=42, start_ms=START_MS, rate=10.0))
NEW = list(synthetic_ticks(markets=4, count=300, seed=43, start_ms=START_MS + 7_200_000,
                           rate=10.0))
MARKETS = sorted({t["market"] for t in OLD})


def two_waves(s: Settings, w: WorkerProcess) -> None:
    """Old ticks, then new ones two hours later (a batch of its own: new segments only)."""
    produce_ticks(s, OLD)
    wait_consumed(w, len(OLD))
    produce_ticks(s, NEW)
    wait_consumed(w, len(OLD) + len(NEW))


def prune(s: Settings, w: WorkerProcess) -> None:
    send_prune(s, RETENTION_MS)
    wait_for(lambda: w.get("/api/stats")["prunes"] >= s.partitions, 60, "the prune")


def calm_pruned(settings_factory: Callable[..., Settings],
                workers: Callable[..., WorkerProcess]) -> WorkerProcess:
    """A calm worker after the two waves and the prune: only the new wave is left."""
    assert sorted({t["market"] for t in NEW}) == MARKETS  # every market has new segments
    calm_s = make(settings_factory)
    calm = workers(calm_s, "calm")
    two_waves(calm_s, calm)
    prune(calm_s, calm)
    kept = {m: calm.get(f"/api/markets/{m}/history?limit=10000")["points"] for m in MARKETS}
    assert all(p["ts"] >= START_MS + 7_200_000 for ps in kept.values() for p in ps)
    assert sum(map(len, kept.values())) == len(NEW)
    return calm


def test_prune_after_a_crash_deletes_only_what_a_calm_run_deletes(
    settings_factory: Callable[..., Settings], workers: Callable[..., WorkerProcess],
) -> None:
    """Gap 4: ticks redelivered after a crash are stored already; sent again, they must
    stay in the segments that hold them, or a prune of one segment deletes datoms another
    carries. The worker's store, a fresh recovery and the calm run must agree."""
    calm = calm_pruned(settings_factory, workers)
    s = never_commits(settings_factory)
    w = workers(s, "w1")
    two_waves(s, w)
    w = crash_and_restart(w, workers, len(OLD) + len(NEW))
    prune(s, w)
    same_state(w, calm, MARKETS)
    assert sketch_digests(w) == sketch_digests(calm)

    # the changelog says the same: a worker with nothing local recovers the same store
    w.stop()
    shutil.rmtree(w.datadir)
    fresh = workers(s, "fresh")
    same_state(fresh, calm, MARKETS)


def test_a_prune_whose_tombstones_a_crash_lost_is_sent_again(
    settings_factory: Callable[..., Settings], workers: Callable[..., WorkerProcess],
) -> None:
    """A prune deletes from the local store at once and tombstones the changelog later.
    A worker killed in between (here its producer holds each message for a second) comes
    back without the doomed segments while the changelog still has them, and gets the
    prune request again: it must send the same tombstones, or a recovery from the
    changelog keeps what the calm run pruned (the chaos soak's seed 2 kept 7,201)."""
    calm = calm_pruned(settings_factory, workers)
    s = never_commits(settings_factory)
    w = workers(s, "w1")
    two_waves(s, w)
    w.stop()  # every segment is on the changelog
    w = workers(s.override(fault_produce_delay_ms=1000), "w1")
    prune(s, w)
    w.kill()  # the deletes are in its store, (nearly) no tombstone reached Kafka
    w = workers(s, "w1")
    wait_for(lambda: w.get("/api/stats")["prunes"] >= s.partitions, 60, "the prune again")
    same_state(w, calm, MARKETS)
    w.stop()
    shutil.rmtree(w.datadir)
    fresh = workers(s, "fresh")
    same_state(fresh, calm, MARKETS)


def test_calm_duplicates_helper() -> None:
    ticks = with_duplicate_bets([{"i": i} for i in range(21)])
    assert [t["i"] for t in ticks] == [0, 1, 2, 3, 0, 4, 5, 6, 7, 8, 9, 10, 7, 11, 12, 13, 14,
                                       15, 16, 17, 14, 18, 19, 20]
    assert orjson.dumps(ticks)  # plain documents, sent as they are


def test_committed_offsets_never_pass_unacknowledged_changelog_messages(
    settings_factory: Callable[..., Settings], workers: Callable[..., WorkerProcess],
) -> None:
    """Gap 1: a slow producer (each message held 300 ms before it goes to Kafka) and a
    worker that SIGKILLs itself right after its first commit. A fresh worker recovering
    from the changelogs alone, then reading on from the committed offsets, must equal the
    calm run: the commit covered only what the changelogs already held."""
    ticks = list(synthetic_ticks(markets=8, count=400, seed=44))
    markets = sorted({t["market"] for t in ticks})
    calm_s = make(settings_factory)
    calm = workers(calm_s, "calm")
    produce_ticks(calm_s, ticks)
    wait_consumed(calm, len(ticks))

    s = make(settings_factory, fault_produce_delay_ms=300, fault_kill_after_commit=True)
    produce_ticks(s, ticks)  # all there before the worker starts: one commit covers most
    w = workers(s, "w1", ready=False)
    assert w.proc is not None
    assert w.proc.wait(120) == -9, "the worker kills itself after its first commit"
    assert "fault injection: SIGKILL right after a commit" in w.log_path.read_text()

    fresh = workers(s.override(fault_produce_delay_ms=0, fault_kill_after_commit=False),
                    "fresh")
    wait_for(lambda: sketch_digests(fresh) == sketch_digests(calm), 90,
             f"the fresh worker's sketches equal the calm run's: {sketch_digests(calm)}")
    same_state(fresh, calm, markets)
    # the commit covered part of the stream: only the rest was read again
    assert fresh.get("/api/stats")["messages"] < len(ticks)


def test_a_backlog_of_one_busy_market_fits_kafkas_message_size(
    settings_factory: Callable[..., Settings], workers: Callable[..., WorkerProcess],
) -> None:
    """Found by the chaos soak's calm run: a backlog read at once gave one market a segment
    (one changelog message) over Kafka's 1 MB limit, and the worker crashed."""
    ticks = list(synthetic_ticks(markets=1, count=30_000, seed=45))
    s = make(settings_factory, batch_runs=8, batch_within_s=2.0)  # batches of ~8 MB
    arrays = [ticks[i:i + 100] for i in range(0, len(ticks), 100)]
    asyncio.run(produce_messages(s, ((a[0]["market"].encode(), orjson.dumps(a))
                                     for a in arrays)))
    w = workers(s, "w1")
    stats = wait_consumed(w, len(ticks), field="ticks")
    assert w.alive() and stats["ticks"] == len(ticks)
    market = ticks[0]["market"]
    assert w.get(f"/api/markets/{market}")["ticks"] == len(ticks)
    # every segment reached the changelog: a worker with nothing local has them all
    w.stop()
    shutil.rmtree(w.datadir)
    fresh = workers(s, "fresh")
    assert fresh.get(f"/api/markets/{market}")["ticks"] == len(ticks)
    history = fresh.get(f"/api/markets/{market}/history?limit=10000")["points"]
    assert len(history) == 10_000


def test_a_changelog_send_the_broker_refuses_is_never_committed_past(
    settings_factory: Callable[..., Settings], workers: Callable[..., WorkerProcess],
) -> None:
    """The broker refuses the changelog batches of a wave (its ``max.message.bytes`` was
    lowered under the worker): the worker must stop, and commit no offset past the ticks
    whose changes the changelog lacks. A successor recovering from the changelog alone,
    then reading on from the committed offsets, equals the calm run.

    A failed send used to count as acknowledged, so a commit could pass the lost changes;
    and the crashed worker never exited: its last commit waited for a message its crashed
    producer would never send."""
    ticks = list(synthetic_ticks(markets=8, count=800, seed=46))
    markets = sorted({t["market"] for t in ticks})
    first, second = ticks[:400], ticks[400:]
    # the second wave as one message per market: segments of ~50 ticks, several KB each
    arrays = [[t for t in second if t["market"] == m] for m in markets]
    wave = [(a[0]["market"].encode(), orjson.dumps(a)) for a in arrays if a]

    calm_s = make(settings_factory)
    calm = workers(calm_s, "calm")
    produce_ticks(calm_s, first)
    asyncio.run(produce_messages(calm_s, wave))
    wait_consumed(calm, len(ticks), field="ticks")

    s = make(settings_factory, commit_interval_s=0.2)
    w = workers(s, "w1")
    produce_ticks(s, first)
    wait_consumed(w, len(first), field="ticks")
    changelog = f"{s.app_id}-facts-changelog"
    limit = asyncio.run(set_max_message_bytes(s, changelog, "1000"))
    asyncio.run(produce_messages(s, wave))
    assert w.proc is not None
    assert w.proc.wait(60) != 0, "the worker stops on its own, as crashed"
    log = w.log_path.read_text()
    assert "were not sent" in log and "MessageSizeTooLarge" in log

    asyncio.run(set_max_message_bytes(s, changelog, limit))
    shutil.rmtree(w.datadir)
    fresh = workers(s, "fresh")
    wait_consumed(fresh, len(wave), field="messages")
    same_state(fresh, calm, markets)
    assert sketch_digests(fresh) == sketch_digests(calm)
