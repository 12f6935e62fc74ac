"""What every live feed shares: deliver API items as ticks exactly once, across restarts.

:class:`Delivery` holds one :class:`~gswarm.feeds.cursor.Cursor` per scope (``global``, or
one watched market). :meth:`Delivery.deliver` drops the items the scope's cursor has seen,
maps the rest to ticks (``None``: not a price move, skipped), sends the ticks, dead-letters
the items that cannot be mapped, waits for Kafka's acknowledgements, and only then moves
and saves the cursor. A crash can therefore repeat (never skip) the items of the last
delivery; their ticks carry the item id and the workers collapse such duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson

from gswarm.feeds.cursor import Cursor, CursorStore
from gswarm.feeds.replay import BadRow
from gswarm.feeds.sink import Sink, Tick

log = logging.getLogger(__name__)

GLOBAL = "global"


@dataclass
class FeedStats:
    items: int = 0  # items (bets, trades) received from the API, repeats included
    ticks: int = 0  # ticks sent
    skipped: int = 0  # items that are not price moves (redemptions, unfilled orders)
    repeats: int = 0  # items dropped because they were delivered already
    dead_letters: int = 0  # items that could not be mapped (sent to the dead-letter topic)
    metas: int = 0  # metadata messages sent
    connects: int = 0  # websocket connections made
    gap_items: int = 0  # ticks found by REST after a reconnect (missed by the socket)

    def snapshot(self) -> dict[str, int]:
        return dict(self.__dict__)


Identify = Callable[[Any], tuple[str, int]]  # item -> (id, event time ms); raises BadRow
ToTick = Callable[[Any], Tick | None]  # raises BadRow
T = TypeVar("T")


def oldest_first(listing: Iterable[T], time_of: Callable[[T], float]) -> list[T]:
    """An API's newest-first listing (its pages in the order read), oldest first.

    The listing is reversed, so items that share a time come out in the API's order
    backwards: the newest of a second (listed first) is delivered last and becomes its
    market's latest tick. A stable sort by ``time_of`` then only moves an item that was
    out of time order (pages that shifted while they were read); ties stay as reversed.
    """
    items = list(listing)
    items.reverse()
    items.sort(key=time_of)
    return items


class Delivery:
    """Exactly-once delivery of one feed's items, with cursors saved after each delivery."""

    def __init__(
        self, sink: Sink, cursors: CursorStore, *, source: str, window_ms: int,
        backfill_ms: int,
    ) -> None:
        self.sink, self.cursors, self.source = sink, cursors, source
        self.window_ms = window_ms
        self.start_ms = int(time.time() * 1000) - backfill_ms
        self.scopes: dict[str, Cursor] = {}
        self.stats = FeedStats()

    async def load(self, scopes: Iterable[str]) -> None:
        """Read the saved cursors of ``scopes`` (a scope never saved starts empty)."""
        saved = (await self.cursors.load()).get("scopes", {})
        for scope in scopes:
            doc = saved.get(scope)
            self.scopes[scope] = (Cursor.from_json(doc, self.window_ms) if doc is not None
                                  else Cursor(self.window_ms))
            if doc is not None:
                log.info("%s feed: scope %s resumes after %d (%d recent ids)", self.source,
                         scope, self.scopes[scope].ts, len(self.scopes[scope].recent))

    def since(self, scope: str) -> int:
        """Event time (ms) from which the API must be asked for ``scope``'s items."""
        cursor = self.scopes[scope]
        return cursor.since() if cursor.ts else self.start_ms

    async def deliver(self, scope: str, items: Iterable[Any], identify: Identify,
                      to_tick: ToTick) -> list[Tick]:
        """Send the new items' ticks; return them once acknowledged and the cursor saved."""
        cursor = self.scopes[scope]
        fresh: dict[str, int] = {}
        ticks: list[Tick] = []
        for item in items:
            self.stats.items += 1
            try:
                item_id, ts = identify(item)
            except BadRow as exc:
                await self.dead_letter(item, str(exc))
                continue
            if item_id in fresh or cursor.seen(item_id, ts):
                self.stats.repeats += 1
                continue
            fresh[item_id] = ts
            try:
                tick = to_tick(item)
            except BadRow as exc:
                await self.dead_letter(item, str(exc))
                continue
            if tick is None:
                self.stats.skipped += 1
            else:
                ticks.append(tick)
        await self.sink.send_ticks(ticks)
        await self.sink.flush()  # the ticks and any dead letters
        self.stats.ticks += len(ticks)
        if fresh:
            for item_id, ts in fresh.items():
                cursor.add(item_id, ts)
            await self.save()
        return ticks

    async def save(self) -> None:
        await self.cursors.save({"scopes": {s: c.to_json() for s, c in self.scopes.items()}})

    async def dead_letter(self, item: Any, reason: str) -> None:
        """Send an item (its JSON, or ``bytes`` as they came) to the dead-letter topic as
        ``bad_item``; the caller flushes."""
        log.warning("%s feed: bad item (%s): %.200s", self.source, reason, item)
        raw = item if isinstance(item, bytes) else orjson.dumps(item)
        await self.sink.dead_letter(raw, "bad_item", reason, f"{self.source}-feed")
        self.stats.dead_letters += 1


async def run_all(*work: Coroutine[Any, Any, None]) -> None:
    """Run coroutines together until one ends or fails; the others are then cancelled
    (and the failure, if any, is raised as itself)."""
    tasks = [asyncio.ensure_future(w) for w in work]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
