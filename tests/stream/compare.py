"""Comparing a worker's state with a reference run of the same stream."""

from __future__ import annotations

import time
import urllib.error
from typing import Any

from gswarm.runner import WorkerProcess

#: How long a comparison retries an answer of 503 (the API's "retry shortly": a partition
#: moving or recovering) before it fails with the last error.
RETRY_503_S = 30.0


def sketch_digests(*workers: WorkerProcess) -> dict[str, Any]:
    """Per partition: (sha256, ticks, last offset) of its sketches, from whoever owns it."""
    out: dict[str, Any] = {}
    for worker in workers:
        parts = worker.get("/api/sketches/local")["partitions"]
        out.update({p: (v["sha256"], v["ticks"], v["last_offset"]) for p, v in parts.items()})
    return out


def sketched(*workers: WorkerProcess) -> int:
    return sum(v[1] for v in sketch_digests(*workers).values())


def answer(worker: WorkerProcess, path: str) -> Any:
    """``worker.get(path)``, asked again while it answers 503 (up to :data:`RETRY_503_S`)."""
    deadline = time.monotonic() + RETRY_503_S
    while True:
        try:
            return worker.get(path)
        except urllib.error.HTTPError as exc:
            body = exc.read().decode(errors="replace")
            if exc.code != 503 or time.monotonic() > deadline:
                raise AssertionError(f"{worker.name} {path}: {exc.code} {body}") from None
            print(f"{time.strftime('%H:%M:%S')} {worker.name} {path}: 503 {body}")
            time.sleep(0.2)


def same_state(a: WorkerProcess, b: WorkerProcess, markets: list[str]) -> None:
    """Latest state and full history of each market are equal on ``a`` and ``b``."""
    for market in markets:
        assert answer(a, f"/api/markets/{market}") == answer(b, f"/api/markets/{market}"), market
        ha = answer(a, f"/api/markets/{market}/history?limit=10000")["points"]
        hb = answer(b, f"/api/markets/{market}/history?limit=10000")["points"]
        assert ha == hb, market
