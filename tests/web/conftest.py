"""The end-to-end fixtures of tests/stream (a worker factory, an app with its topics), and
two workers sharing an app's partitions."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

from gswarm.config import Settings
from gswarm.kafka import topics
from gswarm.ports import free_port
from gswarm.runner import WorkerProcess
from tests.stream.conftest import (
    app_settings,
    module_workers,
    produce_ticks,
    wait_for,
    workers,
)

__all__ = ["app_settings", "module_workers", "workers"]


def two_workers(settings: Settings, start: Callable[..., WorkerProcess],
                ticks: Iterable[dict[str, Any]]) -> tuple[WorkerProcess, WorkerProcess]:
    """Two workers of ``settings``' app (topics applied), each serving some partitions,
    with ``ticks`` ingested across both."""
    ticks = list(ticks)
    asyncio.run(topics.apply(settings))
    w1 = start(settings, "w1")
    w2 = start(settings.override(web_port=free_port()), "w2", ready=False)
    wait_for(lambda: all(w.get("/api/health")["partitions"] for w in (w1, w2)), 90, "balance")
    produce_ticks(settings, ticks)
    wait_for(lambda: sum(w.get("/api/stats")["ticks"] for w in (w1, w2)) >= len(ticks), 90,
             "ingest")
    return w1, w2
