"""What every benchmark part shares: a broker of its own, workers, feeds, figures, results.

Nothing here is timed; the parts (:mod:`bench.throughput`, :mod:`bench.latency`, ...) are.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import platform
import re
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from gswarm.config import Settings
from gswarm.feeds.producer import produce
from gswarm.feeds.synthetic import synthetic_ticks
from gswarm.kafka import security, topics
from gswarm.kafka.broker import POM, LocalBroker
from gswarm.ports import free_port
from gswarm.runner import WorkerProcess

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def stop_on_sigterm() -> None:
    """Make SIGTERM (``timeout``, a CI runner, ``gswarm bench`` passing one on) unwind like
    Ctrl-C, so the finally blocks stop the brokers and workers a run started, by PID."""
    def terminate(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)


def wait_for(pred: Callable[[], bool], timeout: float, what: str = "condition",
             every: float = 0.05) -> None:
    """Poll ``pred`` every ``every`` seconds (connection errors count as not yet)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if pred():
                return
        except OSError:
            pass
        time.sleep(every)
    raise TimeoutError(f"{what} not reached in {timeout:.0f} s")


async def end_offsets(s: Settings, topics: Iterable[str]) -> int:
    """The sum of the end offsets of every partition of ``topics`` (messages ever written)."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import TopicPartition

    consumer = AIOKafkaConsumer(**security.client_kwargs(s), group_id=None)
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in topics for p in range(s.partitions)]
        return sum((await consumer.end_offsets(tps)).values())
    finally:
        await consumer.stop()


def changelog_topics(s: Settings) -> list[str]:
    return [f"{s.app_id}-{table}-changelog" for table in ("facts", "sketches")]


def stats(worker: WorkerProcess) -> dict[str, Any]:
    """The worker's ``/api/stats``; fails at once (with its log's tail) if it has exited."""
    if not worker.alive():
        tail = worker.log_path.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"worker {worker.name} exited; {worker.log_path}:\n{tail}")
    doc: dict[str, Any] = worker.get("/api/stats")
    return doc


def background(fn: Callable[[], None]) -> threading.Thread:
    t = threading.Thread(target=fn, daemon=True)
    t.start()
    return t


def spread(xs: list[float]) -> dict[str, float | int]:
    """Median and min-max of several runs."""
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "runs": len(xs)}


def fmt(s: dict[str, Any], digits: int = 0, unit: str = "") -> str:
    """``median (min-max) unit`` of a :func:`spread`."""
    f = f"{{:,.{digits}f}}"
    return (f"{f.format(s['median'])} ({f.format(s['min'])}-{f.format(s['max'])})"
            f"{' ' + unit if unit else ''}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def machine() -> dict[str, Any]:
    """The machine and versions a result was measured with."""
    model = "cpu"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem = int(line.split()[1]) // 2**20
    versions: dict[str, str | None] = {}
    for dist in ("faust-streaming", "aiokafka", "quixstreams", "confluent-kafka", "numpy",
                 "rocksdict", "orjson", "datasketches"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    kcat = shutil.which("kcat")
    found = re.search(r"<kafka.version>([^<]+)<", POM.read_text())
    return {
        "cpu": model, "cores": os.cpu_count(), "memory_gib": mem,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(), "kafka": found.group(1) if found else None,
        "kcat": kcat is not None, "versions": versions,
    }


@dataclass
class Bench:
    """A benchmark session: a home folder and a broker, both its own."""

    home: Path
    base: Settings
    broker: LocalBroker

    def settings(self, name: str, **changes: Any) -> Settings:
        """Settings of one run: its own app id (consumer group), data dir and web port."""
        return self.base.override(app_id=f"bench-{name}", data_dir=self.home / name,
                                  web_port=free_port(), **changes)

    def create(self, s: Settings) -> None:
        asyncio.run(topics.apply(s))


@contextmanager
def bench_session(partitions: int = 8, home: Path | None = None) -> Iterator[Bench]:
    """A working folder and a Kafka broker on free loopback ports, stopped by PID.

    The folder (default: a new one under the git-ignored ``.gswarm/bench/``) is removed
    when the session ends well, and kept with every worker's log when it fails.
    """
    if home is None:
        (ROOT / ".gswarm" / "bench").mkdir(parents=True, exist_ok=True)
        home = Path(tempfile.mkdtemp(prefix=time.strftime("%Y%m%d-%H%M%S-"),
                                     dir=ROOT / ".gswarm" / "bench"))
    kport, cport = free_port(), free_port()
    base = Settings.from_env({}).override(
        kafka_dir=home / "kafka", kafka_port=kport, kafka_controller_port=cport,
        broker=f"127.0.0.1:{kport}", partitions=partitions, lean=True, log_level="warn")
    broker = LocalBroker(base)
    broker.start()
    try:
        yield Bench(home, base, broker)
    except BaseException:
        broker.stop()
        print(f"bench: failed; logs kept in {home}", file=sys.stderr)
        raise
    broker.stop()
    shutil.rmtree(home, ignore_errors=True)


def prefill(s: Settings, markets: int, count: int, array_size: int = 1, seed: int = 7,
            rate: float | None = None) -> None:
    """Fill ``s.tick_topic`` with ``count`` synthetic ticks (fixed seed)."""
    asyncio.run(produce(s.broker, s.tick_topic, synthetic_ticks(markets, count, seed),
                        rate=rate, array_size=array_size, progress=False,
                        security=security.options(s)))


def today() -> str:
    return dt.date.today().isoformat()
