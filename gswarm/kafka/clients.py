"""What the commands' own Kafka clients share: bounded waits and the errors that end them.

aiokafka's idempotent producer retries a batch until the broker takes it, so a producer
whose broker went away waits forever: on an acknowledgement, in ``send`` once its buffer
is full, and in ``stop`` (which flushes). A command must not. :func:`acked_within` fails
the work it wraps once a message has waited ``timeout_s`` for its acknowledgement, and
:func:`stop_within` gives up on a producer that cannot flush; both end in
:class:`~gswarm.errors.KafkaUnreachable`, whose message says what to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any, Protocol

from gswarm.errors import KafkaUnreachable

CHECKS_PER_TIMEOUT = 4  # how often the watch looks, per timeout


def unreachable(broker: str) -> KafkaUnreachable:
    """No broker answers at ``broker`` (nothing listens, or it does not speak Kafka)."""
    return KafkaUnreachable(
        f"no Kafka broker answers at {broker}: start one (`gswarm kafka up`) or point "
        "--broker / GSWARM_BROKER at a running one")


def stopped_answering(broker: str, timeout_s: float) -> KafkaUnreachable:
    """The broker at ``broker`` left a request unanswered for ``timeout_s``."""
    return KafkaUnreachable(
        f"Kafka at {broker} stopped answering (nothing acknowledged for {timeout_s:g} s, "
        "GSWARM_KAFKA_TIMEOUT_S): check that the broker runs (`gswarm kafka status`), "
        "then run the command again")


class Acks:
    """Messages sent and not yet acknowledged, oldest first, each with when it was sent."""

    def __init__(self) -> None:
        self._waiting: deque[tuple[float, asyncio.Future[Any]]] = deque()

    def track(self, future: asyncio.Future[Any]) -> None:
        self._forget_acknowledged()  # so a block the watch never looked at stays small
        self._waiting.append((time.monotonic(), future))

    def longest_wait(self) -> float:
        """Seconds the oldest unacknowledged message has waited (0 when none waits)."""
        self._forget_acknowledged()
        return time.monotonic() - self._waiting[0][0] if self._waiting else 0.0

    def _forget_acknowledged(self) -> None:
        while self._waiting and self._waiting[0][1].done():
            self._waiting.popleft()


@contextlib.asynccontextmanager
async def acked_within(acks: Acks, timeout_s: float, broker: str) -> AsyncIterator[None]:
    """Run the block; fail it with :class:`KafkaUnreachable` once a message tracked by
    ``acks`` has waited more than ``timeout_s`` for Kafka's acknowledgement."""
    stalled = False

    async def watch(deadline: asyncio.Timeout) -> None:
        nonlocal stalled
        while acks.longest_wait() <= timeout_s:
            await asyncio.sleep(timeout_s / CHECKS_PER_TIMEOUT)
        stalled = True
        deadline.reschedule(asyncio.get_running_loop().time())  # ends the block now

    try:
        async with asyncio.timeout(None) as deadline:
            watcher = asyncio.create_task(watch(deadline))
            try:
                yield
            finally:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
    except TimeoutError:
        if not stalled:
            raise
        raise stopped_answering(broker, timeout_s) from None


class Stoppable(Protocol):
    async def stop(self) -> None: ...


async def stop_within(client: Stoppable, timeout_s: float) -> None:
    """Stop a Kafka client, giving up after ``timeout_s`` (a producer whose broker is gone
    never finishes flushing; what it held was not acknowledged, and the caller says so)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await client.stop()
