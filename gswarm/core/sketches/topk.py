"""Top-k heavy hitters: a bounded set of candidates ranked by Count-Min estimates.

Keys are offered in stream order with their estimate right after their update; a key
enters when there is room or when it beats the weakest candidate, which it then evicts.
At query time the candidates' current estimates are read from the sketch again (a
candidate's count can only have grown) and the best ``k`` are returned.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

import orjson


class TopK:
    """Up to ``capacity`` candidate keys with their last offered estimate.

    The weakest candidate (smallest ``(estimate, key)``) is found with a min-heap of
    ``(estimate, key)`` entries; an entry whose key left or whose estimate grew since is
    stale and skipped when it surfaces, and the heap is rebuilt from the candidates when
    stale entries pile up. The candidates are exactly those of a linear scan for the minimum
    at every offer (``tests/core/sketches/test_cms_topk.py``), only cheaper.
    """

    __slots__ = ("_heap", "candidates", "capacity")

    def __init__(self, capacity: int = 64, candidates: dict[str, int] | None = None) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.candidates: dict[str, int] = dict(candidates or {})
        self._heap: list[tuple[int, str]] = []
        self._rebuild()

    def _rebuild(self) -> None:
        self._heap = [(v, k) for k, v in self.candidates.items()]
        heapq.heapify(self._heap)

    def _weakest(self) -> tuple[int, str]:
        heap, cand = self._heap, self.candidates
        while cand.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0]

    def offer(self, key: str, estimate: int) -> None:
        cand = self.candidates
        old = cand.get(key)
        if old is None and len(cand) >= self.capacity:
            weakest = self._weakest()
            if not (estimate, key) > weakest:
                return
            heapq.heappop(self._heap)
            del cand[weakest[1]]
        elif old is not None and estimate <= old:
            return
        cand[key] = estimate if old is None else max(estimate, old)
        heapq.heappush(self._heap, (cand[key], key))
        if len(self._heap) > 4 * self.capacity + 16:
            self._rebuild()

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
