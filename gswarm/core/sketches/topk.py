"""Top-k heavy hitters: a bounded set of candidates ranked by Count-Min estimates.

Keys are offered in stream order with their estimate right after their update; a key
enters when there is room or when it beats the weakest candidate, which it then evicts.
At query time the candidates' current estimates are read from the sketch again (a
candidate's count can only have grown) and the best ``k`` are returned.
"""

from __future__ import annotations

from collections.abc import Iterable

import orjson


class TopK:
    """Up to ``capacity`` candidate keys with their last offered estimate."""

    __slots__ = ("_weakest", "candidates", "capacity")

    def __init__(self, capacity: int = 64, candidates: dict[str, int] | None = None) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.candidates: dict[str, int] = dict(candidates or {})
        self._weakest: tuple[int, str] | None = None  # cached (estimate, key) of the minimum

    def offer(self, key: str, estimate: int) -> None:
        cand = self.candidates
        if key in cand or len(cand) < self.capacity:
            if key not in cand or (self._weakest is not None and self._weakest[1] == key):
                self._weakest = None  # the minimum may have moved: find it when needed
            cand[key] = max(estimate, cand.get(key, 0))
            return
        weakest = self._weakest
        if weakest is None:
            weakest = self._weakest = min((v, k) for k, v in cand.items())
        if (estimate, key) > weakest:
            del cand[weakest[1]]
            cand[key] = estimate
            self._weakest = None

    def offer_many(self, items: Iterable[tuple[str, int]]) -> None:
        for key, estimate in items:
            self.offer(key, estimate)

    def to_bytes(self) -> bytes:
        return orjson.dumps({"c": self.capacity, "k": self.candidates})

    @classmethod
    def from_bytes(cls, data: bytes) -> TopK:
        doc = orjson.loads(data)
        return cls(doc["c"], doc["k"])


def rank(estimates: dict[str, int], k: int) -> list[tuple[str, int]]:
    """The ``k`` highest (key, estimate), ties broken by key."""
    return sorted(estimates.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
