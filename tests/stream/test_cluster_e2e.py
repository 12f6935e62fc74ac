"""Failover with real processes dying: nothing lost, nothing counted twice.

Each test streams the same seeded ticks into a "calm" app (one worker, nothing happens)
and into an app that suffers; afterwards every partition's sketch bytes and every market's
latest state and history must be equal.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gswarm import cluster
from gswarm.config import Settings
from gswarm.feeds.producer import produce
from gswarm.feeds.synthetic import synthetic_ticks
from gswarm.kafka import topics
from gswarm.kafka.broker import LocalBroker
from gswarm.ports import free_port
from gswarm.runner import WorkerProcess
from gswarm.stream.tables import STANDBY_BUFFER
from tests.conftest import broker_settings
from tests.stream.compare import same_state, sketch_digests, sketched
from tests.stream.conftest import OUTPUT, produce_ticks, wait_consumed, wait_for

pytestmark = pytest.mark.timeout(600)
N = 24_000
RATE = 3_000.0


def stream() -> list[dict[str, Any]]:
    return list(synthetic_ticks(markets=150, count=N, seed=31))


#: The leader's prune requests are messages on the tick partitions: one landing mid-stream
#: moves every later tick's offset, and the sketches keep the last offset they applied, so
#: a run compared with ``calm`` must not cross a prune interval (a slow run under load did).
NO_PRUNE_S = 3600.0


def make(settings_factory: Callable[..., Settings], **kw: Any) -> Settings:
    # cluster workers listen on web_port + i: both ports must be free
    kw.setdefault("prune_interval_s", NO_PRUNE_S)
    s = settings_factory(web_port=free_port(span=2), partitions=4, **kw)
    asyncio.run(topics.apply(s))
    return s


@pytest.fixture
def calm(settings_factory: Callable[..., Settings],
         workers: Callable[..., WorkerProcess]) -> WorkerProcess:
    """The reference: one worker, the whole stream, nothing goes wrong."""
    s = make(settings_factory)
    w = workers(s, "calm")
    produce_ticks(s, stream())
    wait_consumed(w, N)
    return w


class Feeder(threading.Thread):
    """Produces the stream at a steady rate in the background."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(daemon=True)
        self.settings = settings
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(produce(self.settings.broker, self.settings.tick_topic, stream(),
                                rate=RATE, progress=False))
        except BaseException as exc:  # reported by the test
            self.error = exc

    def finish(self) -> None:
        self.join(120)
        assert not self.is_alive() and self.error is None, self.error


def record(name: str, **figures: Any) -> None:
    OUTPUT.mkdir(exist_ok=True)
    (OUTPUT / f"{name}.json").write_text(json.dumps(figures, indent=2))
    print(name, figures)


def markets() -> list[str]:
    return sorted({t["market"] for t in stream()})


def test_kill_9_one_of_two_workers_survivor_takes_over(
    settings_factory: Callable[..., Settings], workers: Callable[..., WorkerProcess],
    calm: WorkerProcess,
) -> None:
    """Plain workers (no supervisor): the survivor sees the dead one's web port refuse
    connections and evicts it from the group, long before its session would expire."""
    session_s = 45.0
    s = make(settings_factory, lean=False, session_timeout_s=session_s)
    w1 = workers(s, "w1")
    w2 = workers(s.override(web_port=free_port()), "w2", ready=False)
    wait_for(lambda: all(w.get("/api/cluster")["active"] for w in (w1, w2)), 60, "balance")
    feeder = Feeder(s)
    feeder.start()
    wait_for(lambda: sketched(w1, w2) > N // 4, 60, "a quarter of the stream")

    victim, survivor = (w1, w2) if w1.get("/api/cluster")["leader"] else (w2, w1)
    lost = victim.get("/api/cluster")["active"]
    before = survivor.get("/api/stats")["ticks_by_partition"]
    victim.kill()
    killed = time.monotonic()

    def writes_for_lost() -> bool:
        now = survivor.get("/api/stats")["ticks_by_partition"]
        return any(now.get(str(p), 0) > before.get(str(p), 0) for p in lost)

    # a bound, not a speed figure: only the eviction moves anything before the session ends
    wait_for(writes_for_lost, session_s - 15, "the survivor writing the dead worker's partitions")
    takeover_s = time.monotonic() - killed
    record("failover-kill-one-of-two", takeover_s=round(takeover_s, 3), partitions=lost)

    feeder.finish()

    def last_offsets(w: WorkerProcess) -> dict[str, int]:
        return {p: v[2] for p, v in sketch_digests(w).items()}

    try:
        wait_for(lambda: last_offsets(survivor) == last_offsets(calm), 120,
                 "the survivor at the end of every partition")
    finally:
        record("failover-kill-one-of-two-state", survivor=sketch_digests(survivor),
               calm=sketch_digests(calm), stats=survivor.get("/api/stats"))
    got, want = sketch_digests(survivor), sketch_digests(calm)
    # The rebalance skip once lost ticks here: a fetch from a kept partition's old position
    # delivered after the seek to its committed offset (see gswarm.stream.delivery.Seeks).
    skipped = survivor.get("/api/stats")["offsets_skipped"]
    assert skipped == 0, f"offsets never delivered to the survivor: {skipped}"
    assert got == want
    same_state(survivor, calm, markets())


def test_repeated_chaos_with_the_supervisor_restarting_workers(
    settings_factory: Callable[..., Settings], calm: WorkerProcess,
) -> None:
    s = make(settings_factory)
    cluster.up(s, 2)
    try:
        feeder = Feeder(s)
        feeder.start()
        rng = random.Random(3)
        kills = []
        for _ in range(3):
            time.sleep(2.0)
            state = cluster.read_state(s)
            assert state is not None
            target = rng.choice(state["workers"])
            os.kill(int(target["pid"]), 9)
            kills.append(target["name"])
        feeder.finish()
        views = [WorkerProcess(cluster.worker_settings(s, i), f"worker-{i}") for i in (0, 1)]

        def done() -> bool:
            try:
                return sketched(*views) >= N and sum(
                    len(v.get("/api/health")["partitions"]) for v in views) == s.partitions
            except OSError:
                return False

        wait_for(done, 180, "the cluster healed and the whole stream ingested")
        state = cluster.read_state(s)
        assert state is not None
        restarts = sum(w["restarts"] for w in state["workers"])
        record("chaos-three-kills", kills=kills, restarts=restarts)
        assert restarts >= 3
        assert sketch_digests(*views) == sketch_digests(calm)
        # any worker answers for any market (routed to the owner)
        same_state(views[0], calm, markets())
    finally:
        cluster.down(s)


def test_the_supervisor_evicts_a_dead_worker_before_its_session_expires(
    settings_factory: Callable[..., Settings], calm: WorkerProcess,
) -> None:
    """The group would wait SESSION_S for a killed worker; the supervisor tells it at once,
    so its partitions are written again long before that, and nothing is lost."""
    session_s = 45.0
    s = make(settings_factory, session_timeout_s=session_s)
    cluster.up(s, 2)
    try:
        views = [WorkerProcess(cluster.worker_settings(s, i), f"worker-{i}") for i in (0, 1)]
        feeder = Feeder(s)
        feeder.start()
        wait_for(lambda: sketched(*views) > N // 4, 60, "a quarter of the stream")
        state = cluster.read_state(s)
        assert state is not None
        victim = state["workers"][0]  # both own partitions (cluster.up waits for that)
        lost = views[0].get("/api/cluster")["active"]
        before = {p: sum(v.get("/api/stats")["ticks_by_partition"].get(str(p), 0)
                         for v in views) for p in lost}
        os.kill(int(victim["pid"]), 9)
        killed = time.monotonic()

        def written_again() -> bool:
            now = {p: 0 for p in lost}
            for v in views:
                with contextlib.suppress(OSError, ValueError):
                    for p in lost:
                        now[p] += v.get("/api/stats")["ticks_by_partition"].get(str(p), 0)
            return any(now[p] > before[p] for p in lost)

        # a bound, not a speed figure: without the eviction nothing can move before the
        # session expires (the restarted worker's join waits for the dead member too)
        wait_for(written_again, session_s - 15, "the dead worker's partitions written again")
        record("evicted-takeover", seconds=round(time.monotonic() - killed, 3),
               session_timeout_s=session_s)
        log = (cluster.cluster_dir(s) / "supervisor.log").read_text()
        assert f"evicted {victim['name']} from group {s.app_id}: faust-" in log
        feeder.finish()
        wait_for(lambda: sketched(*views) >= N, 180, "the whole stream ingested")
        assert sketch_digests(*views) == sketch_digests(calm)

        seen: list[Any] = []

        def standbys_caught_up() -> bool:  # each worker keeps a replica of the other's
            behind = [v.get("/api/cluster")["standby_behind"] for v in views]
            seen[:] = behind
            return all(b and max(b.values()) < STANDBY_BUFFER for b in behind)

        try:
            wait_for(standbys_caught_up, 60, "every standby replica caught up")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; records still to apply, per worker: {seen}") from None
    finally:
        cluster.down(s)


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[LocalBroker]:
    broker = LocalBroker(broker_settings(tmp_path / "kafka"))
    broker.start()
    yield broker
    broker.stop()


def test_worker_survives_a_broker_restart(
    own_broker: LocalBroker, tmp_path: Path, workers: Callable[..., WorkerProcess],
    calm: WorkerProcess,
) -> None:
    s = own_broker.settings.override(app_id="outage", data_dir=tmp_path / "data",
                                     web_port=free_port(), partitions=4,
                                     prune_interval_s=NO_PRUNE_S)
    asyncio.run(topics.apply(s))
    w = workers(s)
    ticks = stream()
    produce_ticks(s, ticks[: N // 2])
    wait_for(lambda: sketched(w) > N // 4, 60, "ingest under way")
    own_broker.stop()  # the broker goes away mid-stream
    time.sleep(5)
    assert w.alive(), "the worker must survive the outage"
    own_broker.start()
    produce_ticks(s, ticks[N // 2:])
    wait_for(lambda: sketched(w) >= N, 180, "the whole stream after the outage")
    assert w.alive()
    assert sketch_digests(w) == sketch_digests(calm)
    same_state(w, calm, markets())


def test_leader_duty_moves_when_the_leader_dies(
    settings_factory: Callable[..., Settings], workers: Callable[..., WorkerProcess],
) -> None:
    s = make(settings_factory, lean=False, prune_interval_s=1.0)
    w1 = workers(s, "w1")
    w2 = workers(s.override(web_port=free_port()), "w2", ready=False)
    wait_for(lambda: all(w.get("/api/cluster")["active"] for w in (w1, w2)), 60, "balance")
    wait_for(lambda: any(w.get("/api/cluster")["leader"] for w in (w1, w2)), 30, "a leader")
    leader, other = (w1, w2) if w1.get("/api/cluster")["leader"] else (w2, w1)
    assert other.get("/api/stats")["prune_schedules"] == 0  # only the leader schedules
    wait_for(lambda: leader.get("/api/stats")["prune_schedules"] > 0, 30, "leader prunes")
    leader.kill()
    wait_for(lambda: other.get("/api/cluster")["leader"], 60, "a new leader")
    wait_for(lambda: other.get("/api/stats")["prune_schedules"] > 0, 30, "new leader prunes")
    log = other.log_path.read_text()
    assert "role: LEADER" in log
