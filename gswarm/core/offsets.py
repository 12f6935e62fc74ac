"""Watching a partition's offsets for skips: a diagnostic for lost messages (pure Python).

Gswarm's producers are not transactional, so a tick topic's offsets are contiguous: a
consumer that sees offset ``n`` right after ``m < n - 1`` on the same partition has been
handed past ``n - m - 1`` messages it never saw (redelivery, going back, is normal).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Skip:
    """Offsets ``first .. last`` of ``partition`` were never seen by this process."""

    partition: int
    first: int
    last: int

    @property
    def count(self) -> int:
        return self.last - self.first + 1


@dataclass
class OffsetWatch:
    """The last offset seen per partition; reports skips forward."""

    last: dict[int, int] = field(default_factory=dict)

    def see(self, partition: int, offset: int) -> Skip | None:
        """Note ``offset``; the skipped range if it jumps past unseen offsets."""
        before = self.last.get(partition)
        self.last[partition] = offset
        if before is not None and offset > before + 1:
            return Skip(partition, before + 1, offset - 1)
        return None

    def keep(self, partitions: set[int]) -> None:
        """Forget partitions not in ``partitions`` (assigned elsewhere for a while, their
        offsets moved on without this process)."""
        self.last = {p: o for p, o in self.last.items() if p in partitions}
