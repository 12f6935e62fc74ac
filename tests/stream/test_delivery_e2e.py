"""Run delivery on the real broker: every message exactly once, in order, across rebalances.

The no-op ceiling app (``bench/ceiling_app.py``: a run topic, Gswarm's transport and
settings, an agent that only records what it processed) runs as real worker processes; a
second worker joins and leaves while ticks are being produced.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

from gswarm.config import Settings
from gswarm.runner import WorkerProcess
from tests.stream.conftest import produce_messages, wait_for

APP = "bench.ceiling_app"


def produce(settings: Settings, first: int, count: int, pause_every: int = 0) -> None:
    """``count`` single-tick messages keyed over 50 markets (numbered from ``first``)."""
    import asyncio

    messages = []
    for i in range(first, first + count):
        market = f"m-{i % 50}".encode()
        messages.append((market, b'{"market":"%s","n":%d}' % (market, i)))
    batch = pause_every or count
    for start in range(0, count, batch):
        chunk = messages[start:start + batch]
        asyncio.run(produce_messages(settings, chunk))
        if pause_every:
            time.sleep(0.2)


def processed(path: Path) -> list[tuple[int, int]]:
    if not path.exists():
        return []
    return [(int(p), int(o)) for p, o in (line.split() for line in path.read_text().split("\n")
                                          if line)]


def test_every_message_once_in_order_across_a_join_and_a_leave(
    app_settings: Settings, workers: Callable[..., WorkerProcess], tmp_path: Path,
) -> None:
    """A worker drains a backlog while ticks keep coming; a second one joins, processes,
    and leaves. Every offset of every partition is processed once, each worker's in order.

    This depends on the revoke committing what was processed first
    (``RunConsumer.on_partitions_revoked``): without it, 200-700 messages per moved or kept
    partition were processed twice, on Faust's own per-message path too.
    """
    delivery = "runs"
    logs = {name: tmp_path / f"{name}.offsets" for name in ("a", "b")}
    produce(app_settings, 0, 20_000)
    a = workers(app_settings, "a", app=APP,
                env={"GSWARM_CEILING_LOG": str(logs["a"]), "GSWARM_CEILING_DELIVERY": delivery})
    settings_b = app_settings.override(web_port=app_settings.web_port + 1)
    feed = threading.Thread(target=produce, args=(app_settings, 20_000, 30_000, 2_000))
    feed.start()
    try:
        time.sleep(1.0)
        b = workers(settings_b, "b", ready=False, app=APP,
                    env={"GSWARM_CEILING_LOG": str(logs["b"]),
                         "GSWARM_CEILING_DELIVERY": delivery})
        wait_for(lambda: bool(b.get("/api/health")["partitions"])
                 and bool(a.get("/api/health")["partitions"]), 60, "b to join")
        wait_for(lambda: b.get("/api/ceiling")["messages"] > 0, 60, "b to process")
        b.stop()
    finally:
        feed.join()
    total = 50_000
    wait_for(lambda: len(set(processed(logs["a"])) | set(processed(logs["b"]))) >= total,
             120, "every message processed")
    time.sleep(2.0)  # anything processed twice would show up by now
    seen = {name: processed(path) for name, path in logs.items()}
    counts = Counter(seen["a"] + seen["b"])
    twice = {k: n for k, n in counts.items() if n > 1}
    where = {k: [name for name, pairs in seen.items() for q in pairs if q == k]
             for k in sorted(twice)[:10]}
    assert not twice, f"processed more than once (by): {where}"
    by_partition: dict[int, list[int]] = defaultdict(list)
    for p, o in counts:
        by_partition[p].append(o)
    assert sum(len(v) for v in by_partition.values()) == total
    for p, offsets in by_partition.items():
        assert sorted(offsets) == list(range(len(offsets))), f"partition {p} has a hole"
    for name, pairs in seen.items():
        assert pairs, f"worker {name} processed nothing"
        last: dict[int, int] = {}
        for p, o in pairs:
            assert o > last.get(p, -1), f"worker {name}: partition {p} out of order at {o}"
            last[p] = o


def test_a_slow_agent_pauses_fetching_and_still_gets_every_message_once(
    settings_factory: Callable[..., Settings], workers: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    """Runs pile up in front of a slow agent: its buffer's back-pressure pauses and resumes
    the partitions' fetching (Faust's ``on_buffer_full``/``on_buffer_drop``) over and over,
    and every message still arrives once, in order."""
    import asyncio

    from gswarm.kafka import topics
    from gswarm.ports import free_port

    # one run per batch, a buffer of two runs, runs of a few messages: constant pressure
    s = settings_factory(web_port=free_port(), partitions=4, batch_runs=1,
                         fetch_partition_bytes=2048)
    asyncio.run(topics.apply(s))
    produce(s, 0, 3_000)
    log = tmp_path / "offsets"
    w = workers(s, "slow", app=APP, env={"GSWARM_CEILING_LOG": str(log),
                                         "GSWARM_CEILING_DELAY_S": "0.002"})
    def done() -> bool:
        assert w.alive(), f"the worker exited; see {w.log_path}"
        return len(set(processed(log))) >= 3_000

    wait_for(done, 120, "every message processed")
    time.sleep(1.0)
    pairs = processed(log)
    assert w.alive()
    assert len(pairs) == len(set(pairs)) == 3_000
    last: dict[int, int] = {}
    for p, o in pairs:
        assert o == last.get(p, -1) + 1, f"partition {p}: {o} after {last.get(p)}"
        last[p] = o
    assert w.get("/api/ceiling")["messages"] == 3_000
