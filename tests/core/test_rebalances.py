"""The rebalance timeline that /api/cluster shows and the failover benchmark reads."""

from __future__ import annotations

from gswarm.core.rebalances import KEPT, Rebalances


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def test_a_failover_is_timed_step_by_step() -> None:
    r = Rebalances(Clock())
    r.began()
    r.revoked()
    r.assigned([0, 1, 2, 3])  # the first assignment: everything is gained
    r.recovered()
    r.wrote([0, 1, 2, 3])
    r.began()  # a peer died
    r.revoked()
    r.assigned([0, 1, 2, 3, 4, 5])
    r.recovered()
    r.wrote([0, 1])  # its own partitions first: not what the failover waits for
    r.wrote([1, 5])
    r.wrote([4, 5])
    last = r.as_dict()["recent"][-1]
    assert r.count == 2
    assert last["gained"] == [4, 5]
    assert last["began_at"] < last["revoked_at"] < last["assigned_at"] < last["recovered_at"]
    assert last["first_write_at"]["5"] < last["first_write_at"]["4"]
    assert set(last["first_write_at"]) == {"4", "5"}  # only the gained ones are timed


def test_an_assignment_without_a_revoke_counts_and_only_the_latest_are_kept() -> None:
    r = Rebalances(Clock())
    r.wrote([0])  # nothing gained yet: nothing recorded
    r.recovered()
    assert r.count == 0 and r.last.recovered_at is None
    for i in range(KEPT + 3):
        r.assigned([i])
    assert r.count == KEPT + 3
    assert len(r.as_dict()["recent"]) == KEPT
    assert r.last.gained == (KEPT + 2,) and r.last.revoked_at is None
    r.revoked()  # a revoke without the start seen: a rebalance of its own
    assert r.count == KEPT + 4 and r.last.began_at is None


def _peer_died() -> Rebalances:
    """A worker that owned 0 and 1 and wrote to them, then took over 2 and 3 from a peer
    that died (recovered, nothing written on them yet)."""
    r = Rebalances(Clock())
    r.assigned([0, 1])
    r.wrote([0, 1])
    r.began()
    r.revoked()
    r.assigned([0, 1, 2, 3])
    r.recovered()
    return r


def test_a_partition_gained_but_not_written_before_the_next_rebalance_is_still_gained() -> None:
    """A survivor takes over 2 and 3, and the restarted worker joins before the survivor
    wrote to them: they stay with the survivor, and their first write (what the failover
    waits for) is timed in the rebalance it happened in."""
    r = _peer_died()
    r.wrote([0])
    r.began()  # it came back before a write on 2 or 3
    r.revoked()
    r.assigned([2, 3])
    r.recovered()
    r.wrote([2, 3])
    last = r.as_dict()["recent"][-1]
    assert last["gained"] == [2, 3]
    assert set(last["first_write_at"]) == {"2", "3"}
    r.began()
    r.revoked()
    r.assigned([2, 3, 4])  # written already: only the new one is gained
    assert r.last.gained == (4,)


def test_a_write_between_a_rebalance_beginning_and_its_assignment_counts_for_the_last_one(
        ) -> None:
    """The batch in hand when the next rebalance begins still belongs to the assignment
    before it: its writes are timed there, not in the rebalance under way."""
    r = _peer_died()
    r.began()  # the restarted peer joins...
    r.wrote([2, 3])  # ...while the batch in hand is written
    r.revoked()
    r.assigned([2, 3])
    took_over, under_way = r.as_dict()["recent"][-2:]
    assert took_over["gained"] == [2, 3] and set(took_over["first_write_at"]) == {"2", "3"}
    assert took_over["first_write_at"]["2"] > took_over["recovered_at"]
    assert under_way["gained"] == [] and under_way["first_write_at"] == {}
