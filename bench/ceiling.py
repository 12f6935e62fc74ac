"""The delivery ceiling: a no-op Faust agent beside a bare aiokafka drain, same topic, same run.

Every run gets its own topic pre-filled with the same synthetic ticks; the aiokafka drain
reads it (decoding each value), then a worker of ``bench/ceiling_app.py`` (configured like
Gswarm's, nothing done per message but counting) reads it as its own consumer group. The
ceiling's rate runs from its first to its last batch; its CPU is the process's over that
span. Every later throughput figure is read against this one.
"""

from __future__ import annotations

from typing import Any

from bench.common import Bench, prefill, spread, wait_for
from bench.throughput import aiokafka_drain
from gswarm.runner import WorkerProcess

APP = "bench.ceiling_app"


def ceiling_worker(b: Bench, s: Any, messages: int, ticks: int,
                   delivery: str = "runs") -> dict[str, Any]:
    """One ceiling worker (``delivery``: runs or Faust's messages) drains the topic."""
    topic = s.tick_topic
    s = s.override(app_id=f"{s.app_id}-{delivery}")  # its own consumer group
    worker = WorkerProcess(s, f"ceiling-{delivery}", app=APP,
                           env={"GSWARM_CEILING_DELIVERY": delivery,
                                "GSWARM_CEILING_TOPIC": topic})
    worker.start()
    doc: dict[str, Any] = {}
    try:
        def done() -> bool:
            nonlocal doc
            if not worker.alive():
                raise RuntimeError(f"ceiling worker exited; see {worker.log_path}")
            doc = worker.get("/api/ceiling")
            return int(doc["messages"]) >= messages

        wait_for(done, 600, "every message delivered to the no-op agent", every=0.2)
    finally:
        worker.stop()
    seconds = doc["last_time"] - doc["first_time"]
    disorder = sum(p["disorder"] for p in doc["partitions"].values())
    return {"messages": doc["messages"], "ticks": doc["ticks"], "seconds": seconds,
            "messages_per_s": doc["messages"] / seconds, "ticks_per_s": doc["ticks"] / seconds,
            "cpu_us_per_message": (doc["last_cpu"] - doc["first_cpu"]) / doc["messages"] * 1e6,
            "out_of_order_or_twice": disorder, "expected_ticks": ticks}


def run(b: Bench, markets: int, ticks: int, array_size: int, runs: int,
        faust_runs: int = 1) -> dict[str, Any]:
    """The ceiling for one message shape: drain and no-op agent, ``runs`` times; the same
    agent on Faust's per-message path ``faust_runs`` times (the figure before run delivery).
    """
    shape = "single" if array_size == 1 else f"array{array_size}"
    drains, ours, faust = [], [], []
    messages = 0
    for i in range(runs):
        s = b.settings(f"ceiling-{shape}-{i}")
        b.create(s)
        prefill(s, markets, ticks, array_size)
        drains.append(aiokafka_drain(s, ticks))
        if i == 0:
            messages = drains[-1]["messages"]
        ours.append(ceiling_worker(b, s, messages, ticks))
        if i < faust_runs:
            faust.append(ceiling_worker(b, s, messages, ticks, "messages"))
    drain = spread([r["ticks_per_s"] for r in drains])
    drain_msgs = spread([r["messages_per_s"] for r in drains])
    rate = spread([r["messages_per_s"] for r in ours])
    return {
        "shape": shape, "markets": markets, "ticks": ticks, "messages": messages,
        "aiokafka_drain": {"messages_per_s": drain_msgs, "ticks_per_s": drain, "runs": drains},
        "noop_agent": {"messages_per_s": rate,
                       "ticks_per_s": spread([r["ticks_per_s"] for r in ours]),
                       "cpu_us_per_message": spread([r["cpu_us_per_message"] for r in ours]),
                       "runs": ours},
        "faust_per_message": {"messages_per_s": spread([r["messages_per_s"] for r in faust]),
                              "cpu_us_per_message": spread(
                                  [r["cpu_us_per_message"] for r in faust]),
                              "runs": faust} if faust else None,
        "ratio_vs_aiokafka_drain": rate["median"] / drain_msgs["median"],
        "lost_or_twice": sum(r["out_of_order_or_twice"] + (messages - r["messages"])
                             for r in ours + faust),
    }
