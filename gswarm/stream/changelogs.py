"""The tables' changelog queue keeps the records a recovery is reading.

Faust's ``TableManager`` hands every changelog record it reads (active recovery, standby
replicas) to its recovery through one queue, and that queue is emptied whenever the app's
flow control resumes. Faust resumes the flow several times per rebalance: before the
active recovery reads (the queue may then hold records fetched in the previous
generation, which must go), and again after the standby partitions have started reading
and when the recovery completes (``Recovery.on_recovery_completed``). Records queued at
those later moments are dropped, although nothing seeks their partition back: the records
after them are applied, the replica's persisted offset passes them, and the replica lacks
them for good. A worker that later took the partition over from that replica pruned
without the missing segment, so the changelog kept a tick the calm run had pruned (chaos
soak, 2026-11-28: changelog record 101 of facts partition 1, dropped by a standby whose
store held everything else up to 12,082).

:class:`TableManager` (Faust's, set by the App's ``TableManager`` setting) makes the queue
a :class:`ChangelogQueue`: it is emptied once per rebalance, by the first clear after the
rebalance began (``on_partitions_revoked``; Faust's revoke clears its queues right after),
i.e. only of records fetched in an earlier generation. Faust's contract is unchanged: each
record of the current generation is applied once, in offset order, and a new generation
still starts from an empty queue.
"""

from __future__ import annotations

from typing import Any

from faust.tables import TableManager as FaustTableManager
from faust.types import TP
from mode.utils.queues import ThrowableQueue


class ChangelogQueue(ThrowableQueue[Any]):
    """Faust's changelog queue, emptied only once a rebalance began."""

    #: a rebalance began since the queue was last emptied: what it holds is stale
    stale: bool = False

    def clear(self) -> None:
        if self.stale:
            self.stale = False
            super().clear()


class TableManager(FaustTableManager):
    """Faust's table manager with a :class:`ChangelogQueue`."""

    @property
    def changelog_queue(self) -> ChangelogQueue:
        if self._changelog_queue is None:
            self._changelog_queue = ChangelogQueue(
                maxsize=self.app.conf.stream_buffer_maxsize,
                flow_control=self.app.flow_control,
                clear_on_resume=True,
            )
        return self._changelog_queue  # type: ignore[return-value]

    def on_partitions_revoked(self, revoked: set[TP]) -> None:
        self.changelog_queue.stale = True  # every rebalance starts here (Faust's app)
        super().on_partitions_revoked(revoked)
