"""Which peer workers are certainly dead: the rule behind evicting them from the group.

A worker's web port answers for as long as its process lives, and a Faust worker leaves its
consumer group before it closes that port when it stops cleanly. So a peer that answered
before and now *refuses* connections (nothing listens: the kernel said so, on this machine
or another whose host is up) has died without leaving; the group would wait a whole session
timeout for it. A peer that merely does not answer in time (busy, or its host is gone) is
not judged: the session timeout decides those.

:class:`Liveness` applies that rule to probe outcomes; :class:`Members` remembers which
group members were seen at which URL while they were alive, so only the member ids of the
dead process are evicted, never those of a new process that took over its URL. Pure Python.
"""

from __future__ import annotations

from collections.abc import Iterable

#: refusals in a row, after having answered, that make a peer dead
REFUSALS = 2


class Liveness:
    """Probe outcomes per peer URL, and the verdict."""

    def __init__(self, refusals: int = REFUSALS) -> None:
        self.refusals = refusals
        self._answered: set[str] = set()
        self._refused: dict[str, int] = {}

    def answered(self, url: str) -> None:
        self._answered.add(url)
        self._refused.pop(url, None)

    def refused(self, url: str) -> bool:
        """A refused connection; true once the peer is dead (then its record starts over)."""
        if url not in self._answered:
            return False  # never seen alive: starting, or not a worker we knew
        self._refused[url] = self._refused.get(url, 0) + 1
        if self._refused[url] < self.refusals:
            return False
        self._answered.discard(url)
        del self._refused[url]
        return True

    def keep(self, urls: Iterable[str]) -> None:
        """Forget peers no longer in the group."""
        keep = set(urls)
        self._answered &= keep
        self._refused = {u: n for u, n in self._refused.items() if u in keep}


class Members:
    """Member ids seen at each worker URL (from the group's descriptions)."""

    def __init__(self) -> None:
        self.by_url: dict[str, set[str]] = {}

    def seen(self, members: Iterable[tuple[str, str | None]]) -> None:
        """``(member id, url)`` pairs of one description of the group."""
        by_url: dict[str, set[str]] = {}
        for member_id, url in members:
            if url is not None:
                by_url.setdefault(url, set()).add(member_id)
        self.by_url = by_url

    def at(self, url: str) -> set[str]:
        return set(self.by_url.get(url, ()))
