"""Worker processes: ``faust -A gswarm.app worker`` started, watched and stopped by PID.

Used by ``gswarm worker``/``gswarm run`` and by the tests. Each worker gets its own data
dir and web port; its settings reach it through the environment (the app reads
:class:`~gswarm.config.Settings` at import).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from gswarm.config import Settings
from gswarm.errors import WorkerError
from gswarm.kafka import topics
from gswarm.ports import require_free
from gswarm.web.client import get_json


async def preflight(settings: Settings, ports: Iterable[int]) -> None:
    """What workers need before they start, checked so a command fails at once and says
    why (a Faust worker would wait for its broker, or die on a port, in its log): the web
    ``ports`` free, the broker answering, each declared topic there with its partitions,
    the signal rules file valid."""
    rules = settings.signals_rules_path
    if rules is not None:
        from gswarm.core.signals import load_rules

        load_rules(rules)
    for port in ports:
        require_free(settings.web_host, port, "a worker's web server",
                     "--web-port / GSWARM_WEB_PORT")
    await topics.require(settings)


class WorkerProcess:
    """One Faust worker process of the Gswarm app."""

    def __init__(self, settings: Settings, name: str = "worker", log_path: Path | None = None,
                 app: str = "gswarm.app", env: dict[str, str] | None = None):
        self.settings = settings
        self.name = name
        self.app = app  # the module Faust loads (``faust -A``): the bench's ceiling app too
        self.env = env or {}  # more environment for the process (besides the settings)
        self.datadir = settings.data_dir / name
        self.log_path = log_path or (settings.data_dir / f"{name}.log")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return self.settings.web_url

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "faust", "-A", self.app, "--datadir", str(self.datadir),
            "worker", "-l", self.settings.log_level,
            "--web-host", self.settings.web_host, "--web-port", str(self.settings.web_port),
        ]

    def start(self) -> None:
        self.datadir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.settings.to_env(), **self.env, "PYTHONUNBUFFERED": "1"}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command(), env=env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def get(self, path: str, timeout: float = 10.0) -> Any:
        """GET a JSON document from this worker's web server."""
        return get_json(self.settings, self.url + path, timeout)

    def wait_ready(self, partitions: int | None = None, timeout: float = 90.0) -> None:
        """Wait until the worker serves ``partitions`` partitions (default: all)."""
        want = self.settings.partitions if partitions is None else partitions
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise WorkerError(f"worker {self.name} exited while starting: see "
                                  f"{self.log_path}")
            try:
                if len(self.get("/api/health", timeout=2)["partitions"]) >= want:
                    return
            except (OSError, urllib.error.URLError, ValueError, KeyError):
                pass
            time.sleep(0.3)
        raise WorkerError(f"worker {self.name} did not take its partitions within "
                          f"{timeout:.0f} s: see {self.log_path}")

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``: always by this process's own PID."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL (tests of crashes)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
