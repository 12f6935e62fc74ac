"""What a failed command says: one line that names what failed and what to do.

Commands raise a :class:`~gswarm.errors.GswarmError` for what they find wrong themselves.
What escapes them from a library or the operating system (aiokafka's errors, a port in
use, a file that cannot be read) is turned into one here, in one place, by
:func:`explain`; the ``gswarm`` entry point prints it with :func:`one_line`.
"""

from __future__ import annotations

import errno

from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    NodeNotReadyError,
    RequestTimedOutError,
    UnknownTopicOrPartitionError,
)

from gswarm.config import Settings
from gswarm.errors import BrokerError, GswarmError, PortInUseError, TopicError
from gswarm.kafka.clients import stopped_answering, unreachable
from gswarm.kafka.security import diagnose

MAX_LINE = 500  # characters of a message printed (a library's message can be long)


def explain(exc: BaseException, settings: Settings | None) -> GswarmError | None:
    """``exc`` as the error a command fails with, or ``None`` if Gswarm does not know it
    (a bug). ``settings`` are the command's (``None`` if they could not be read)."""
    if isinstance(exc, GswarmError):
        return exc
    broker = settings.broker if settings is not None else "GSWARM_BROKER"
    if isinstance(exc, KafkaConnectionError):
        refused = diagnose(settings) if settings is not None else None
        return refused or unreachable(broker)
    if isinstance(exc, KafkaTimeoutError | RequestTimedOutError | NodeNotReadyError):
        return stopped_answering(broker, settings.kafka_timeout_s if settings else 30.0)
    if isinstance(exc, UnknownTopicOrPartitionError):
        return TopicError(f"a topic is missing on {broker}: create the topics with "
                          "`gswarm topics apply`")
    if isinstance(exc, KafkaError):
        return BrokerError(f"Kafka at {broker} failed: {exc}: see the broker's log, then "
                           "run the command again")
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return PortInUseError(f"{exc}: stop what holds the port or choose another one")
    if isinstance(exc, OSError) and exc.filename is not None:
        return GswarmError(f"{exc.filename}: {exc.strerror or exc}: check the path and its "
                           "permissions")
    return None


def unexpected(exc: BaseException) -> str:
    """The line for an exception Gswarm does not know."""
    return (f"unexpected {type(exc).__name__}: {exc} (a bug in Gswarm: please report it; "
            "GSWARM_TRACEBACK=1 shows where it happened)")


def one_line(message: str) -> str:
    """``message`` on one line (whitespace runs become one space), at most ``MAX_LINE``
    characters."""
    text = " ".join(message.split())
    return text if len(text) <= MAX_LINE else text[:MAX_LINE - 1] + "…"
