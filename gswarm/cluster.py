"""A local cluster: N workers of the app on one machine, supervised ("autohealing").

``gswarm cluster up`` starts a detached supervisor (``python -m gswarm.cluster``) that
starts the workers -- distinct web ports (``GSWARM_WEB_PORT + i``), data dirs and log files
-- and restarts any that dies, at once the first time, then after a growing back-off.
A worker that died is first evicted from the consumer group (:func:`gswarm.kafka.groups.
evict`): the others take its partitions now, not once its session has expired. Its state
file lists every PID it owns, so ``gswarm cluster down`` stops exactly those processes (the
supervisor first, which stops its workers; any worker left is stopped by its own PID after
checking its command line).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from gswarm.config import Settings
from gswarm.errors import WorkerError
from gswarm.kafka import groups
from gswarm.runner import WorkerProcess, preflight

log = logging.getLogger("gswarm.cluster")

BACKOFF_S = (0.0, 0.5, 1.0, 2.0, 5.0, 10.0)


def cluster_dir(settings: Settings) -> Path:
    return settings.data_dir / "cluster"


def state_file(settings: Settings) -> Path:
    return cluster_dir(settings) / "state.json"


def worker_settings(settings: Settings, index: int) -> Settings:
    return settings.override(web_port=settings.web_port + index)


def read_state(settings: Settings) -> dict[str, Any] | None:
    try:
        doc: dict[str, Any] = json.loads(state_file(settings).read_text())
        return doc
    except (FileNotFoundError, ValueError):
        return None


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _is(pid: int | None, marker: str) -> bool:
    return pid is not None and marker in _cmdline(pid)


class Supervisor:
    """Starts N workers, restarts the dead ones, stops them all on SIGTERM."""

    def __init__(self, settings: Settings, workers: int) -> None:
        self.settings = settings
        self.workers = [
            WorkerProcess(worker_settings(settings, i), f"worker-{i}",
                          log_path=cluster_dir(settings) / f"worker-{i}.log")
            for i in range(workers)
        ]
        self.restarts = [0] * workers
        self.stopping = False

    def write_state(self) -> None:
        doc = {
            "supervisor": os.getpid(),
            "workers": [
                {"name": w.name, "pid": w.pid, "url": w.url, "log": str(w.log_path),
                 "restarts": self.restarts[i]}
                for i, w in enumerate(self.workers)
            ],
        }
        tmp = state_file(self.settings).with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=2))
        tmp.replace(state_file(self.settings))

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        for w in self.workers:
            w.start()
            log.info("started %s: pid %s, %s", w.name, w.pid, w.url)
        self.write_state()
        due: dict[int, float] = {}
        while not self.stopping:
            for i, w in enumerate(self.workers):
                if w.alive() or self.stopping:
                    continue
                if i not in due:
                    delay = BACKOFF_S[min(self.restarts[i], len(BACKOFF_S) - 1)]
                    log.warning("%s (pid %s) died; restarting in %.1fs", w.name, w.pid, delay)
                    self.evict(w)
                    due[i] = time.monotonic() + delay
                elif time.monotonic() >= due[i]:
                    del due[i]
                    w.start()
                    self.restarts[i] += 1
                    log.info("restarted %s: pid %s", w.name, w.pid)
                    self.write_state()
            time.sleep(0.1)
        for w in self.workers:
            w.stop()
        state_file(self.settings).unlink(missing_ok=True)
        log.info("cluster stopped")

    def evict(self, worker: WorkerProcess) -> None:
        """Tell the group that ``worker``'s member is gone (its process has exited)."""
        s = worker.settings
        try:
            gone = asyncio.run(asyncio.wait_for(
                groups.evict(s, s.app_id, worker.url), s.kafka_timeout_s))
        except Exception as exc:  # the session timeout still removes it
            log.warning("could not evict %s from group %s (%s); its session will expire",
                        worker.name, s.app_id, exc)
            return
        log.info("evicted %s from group %s: %s", worker.name, s.app_id,
                 ", ".join(gone) or "no member left")

    def _stop(self, signum: int, frame: object) -> None:
        self.stopping = True


def up(settings: Settings, workers: int, timeout: float = 120.0,
       standbys: bool = True) -> dict[str, Any]:
    """Start a supervised cluster unless one runs; wait until every partition is served.

    With two workers or more each keeps a standby replica of the other's tables (unless
    ``standbys`` is false: the failover benchmark measures both)."""
    state = read_state(settings)
    if state and _is(state.get("supervisor"), "gswarm.cluster"):
        return state
    asyncio.run(preflight(settings, [worker_settings(settings, i).web_port
                                     for i in range(workers)]))
    if workers >= 2 and standbys:  # standbys so a survivor promotes a warm replica
        settings = settings.override(lean=False)
    cluster_dir(settings).mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **settings.to_env()}
    with (cluster_dir(settings) / "supervisor.log").open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gswarm.cluster", "--workers", str(workers)],
            env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise WorkerError(f"the cluster's supervisor exited while starting: see "
                              f"{cluster_dir(settings) / 'supervisor.log'}")
        state = read_state(settings)
        if state and _balanced(settings, state):
            return state
        time.sleep(0.5)
    raise WorkerError(f"the cluster did not take every partition within {timeout:.0f} s: "
                      f"see the logs in {cluster_dir(settings)} (it keeps running: `gswarm "
                      "cluster status`, `gswarm cluster down`)")


def _balanced(settings: Settings, state: dict[str, Any]) -> bool:
    """Every partition served, and every worker serving some (when there are enough)."""
    partitions = settings.partitions
    covered: set[int] = set()
    busy = 0
    for w in state["workers"]:
        with contextlib.suppress(OSError, ValueError):
            active = set(_get(settings, w["url"], "/api/cluster")["active"])
            covered |= active
            busy += bool(active)
    return len(covered) == partitions and busy >= min(len(state["workers"]), partitions)


def _get(settings: Settings, url: str, path: str) -> Any:
    from gswarm.web.client import get_json

    return get_json(settings, url + path, timeout=3)


def down(settings: Settings, timeout: float = 60.0) -> bool:
    """Stop the supervisor and every worker it owns, by PID. False if none ran."""
    state = read_state(settings)
    if state is None:
        return False
    sup = int(state.get("supervisor") or 0)
    if _is(sup, "gswarm.cluster"):
        os.kill(sup, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _is(sup, "gswarm.cluster") and time.monotonic() < deadline:
            time.sleep(0.2)
    for w in state["workers"]:
        pid = w.get("pid")
        if pid is not None and _is(pid, "gswarm.app"):  # the supervisor did not get to it
            os.kill(int(pid), signal.SIGKILL)
    state_file(settings).unlink(missing_ok=True)
    return True


def status(settings: Settings) -> list[dict[str, Any]]:
    """Each worker: pid, alive, restarts, and its own view (partitions, leader, lag)."""
    state = read_state(settings)
    if state is None:
        return []
    rows = []
    for w in state["workers"]:
        row = {**w, "alive": _is(w.get("pid"), "gswarm.app")}
        try:
            row["view"] = _get(settings, w["url"], "/api/cluster")
        except (OSError, ValueError) as exc:
            row["view"] = {"error": str(exc)}
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description="Gswarm cluster supervisor")
    parser.add_argument("--workers", type=int, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(levelname)s %(message)s")
    settings = Settings.from_env()
    Supervisor(settings, args.workers).run()


if __name__ == "__main__":
    main()

