"""When a worker's rebalances happened, part by part: what failover time is made of.

A failover is: the group notices the dead member (session expiry, or the supervisor's
eviction) and the survivors learn of it at their next heartbeat (the rebalance begins),
they finish the batch in hand and give up their partitions (revoke), the group assigns
again, each table partition a worker gained is brought up to date (standby catch-up or
changelog replay), and ingest resumes on it. :class:`Rebalances` keeps the wall-clock moment of each
step of the latest rebalance, and the first write on each tick partition the worker gained,
so ``/api/cluster`` (and the failover benchmark) can say where the time went, for the
latest few rebalances. ``count`` is how many rebalances this process has seen: a steady
cluster's count does not grow.

Wall-clock seconds (``time.time()``), so moments from different processes of one machine
compare. Pure Python: the stream wires it to Faust's signals.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Rebalance:
    """One rebalance as this worker saw it."""

    began_at: float | None = None  # the worker learnt that a rebalance began
    revoked_at: float | None = None  # it had given up its partitions
    assigned_at: float | None = None  # the new assignment arrived
    recovered_at: float | None = None  # its tables were up to date; ingest resumes
    gained: tuple[int, ...] = ()  # tick partitions it did not own before
    first_write_at: dict[int, float] = field(default_factory=dict)  # per gained partition

    def as_dict(self) -> dict[str, Any]:
        return {
            "began_at": self.began_at, "revoked_at": self.revoked_at,
            "assigned_at": self.assigned_at,
            "recovered_at": self.recovered_at, "gained": list(self.gained),
            "first_write_at": {str(p): t for p, t in sorted(self.first_write_at.items())},
        }


KEPT = 8  # rebalances kept (the latest last)
STEPS = ("began_at", "revoked_at", "assigned_at", "recovered_at")


class Rebalances:
    """The latest rebalances' moments, and how many rebalances there were."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.count = 0
        self.owned: frozenset[int] = frozenset()
        self.recent: deque[Rebalance] = deque(maxlen=KEPT)
        self._waiting: set[int] = set()  # gained partitions not written yet (in any rebalance)

    @property
    def last(self) -> Rebalance:
        """The latest rebalance (an empty one before the first)."""
        return self.recent[-1] if self.recent else Rebalance()

    def _current(self, step: str) -> Rebalance:
        """The rebalance a ``step`` belongs to: the latest, or a new one if that one is at
        or past ``step`` already (a step was missed, e.g. an assignment without a revoke)."""
        later = STEPS[STEPS.index(step):]
        if not self.recent or any(getattr(self.last, s) is not None for s in later):
            self.count += 1
            self.recent.append(Rebalance())
        return self.last

    def began(self) -> None:
        self._current("began_at").began_at = self.clock()

    def revoked(self) -> None:
        self._current("revoked_at").revoked_at = self.clock()

    def assigned(self, partitions: Iterable[int]) -> None:
        owned = frozenset(partitions)
        self._current("assigned_at")
        self.last.assigned_at = self.clock()
        # a partition gained by an earlier rebalance and not written before this one still
        # counts as gained: its first write is what a failover waits for
        self.last.gained = tuple(sorted((owned - self.owned) | (self._waiting & owned)))
        self._waiting = set(self.last.gained)
        self.owned = owned

    def recovered(self) -> None:
        if self.last.recovered_at is None:
            self.last.recovered_at = self.clock()

    def wrote(self, partitions: Iterable[int]) -> None:
        """Facts were written (queryable) on ``partitions``."""
        if not self._waiting:
            return
        now = self.clock()
        for p in set(partitions) & self._waiting:
            # timed in the rebalance that gave it (a later one may have begun already)
            gave = next((r for r in reversed(self.recent) if p in r.gained), self.last)
            gave.first_write_at[p] = now
            self._waiting.discard(p)

    def as_dict(self) -> dict[str, Any]:
        return {"count": self.count, "recent": [r.as_dict() for r in self.recent]}
