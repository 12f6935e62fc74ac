"""Comparing a worker's state with a reference run of the same stream."""

from __future__ import annotations

from typing import Any

from gswarm.runner import WorkerProcess


def sketch_digests(*workers: WorkerProcess) -> dict[str, Any]:
    """Per partition: (sha256, ticks, last offset) of its sketches, from whoever owns it."""
    out: dict[str, Any] = {}
    for worker in workers:
        parts = worker.get("/api/sketches/local")["partitions"]
        out.update({p: (v["sha256"], v["ticks"], v["last_offset"]) for p, v in parts.items()})
    return out


def sketched(*workers: WorkerProcess) -> int:
    return sum(v[1] for v in sketch_digests(*workers).values())


def same_state(a: WorkerProcess, b: WorkerProcess, markets: list[str]) -> None:
    """Latest state and full history of each market are equal on ``a`` and ``b``."""
    for market in markets:
        assert a.get(f"/api/markets/{market}") == b.get(f"/api/markets/{market}"), market
        ha = a.get(f"/api/markets/{market}/history?limit=10000")["points"]
        hb = b.get(f"/api/markets/{market}/history?limit=10000")["points"]
        assert ha == hb, market
