"""Gswarm's exceptions, one root and a family per area.

    GswarmError
    ├── ConfigError            a setting or a command-line option has a bad value
    ├── BrokerError            the local Kafka broker cannot be fetched, started or reached
    │   ├── MissingToolError   java or mvn is not installed
    │   ├── KafkaUnreachable   no broker answers at the address, or it stopped answering
    │   └── KafkaAuthError     the broker refused the credentials, or TLS failed
    ├── PortInUseError         a port a server must listen on is taken
    ├── TopicError             topics/ is invalid, or a topic cannot be applied, is missing
    │   │                      or differs from its declaration
    │   └── TopicDriftError    `topics apply` found topics that differ (exit status 3)
    ├── TickError              a message is not a valid tick (carries the dead-letter reason)
    ├── FeedError              a feed's input (file, API) is unusable
    ├── WorkerError            a worker does not start, or does not answer a query
    └── QueryError             a query has a bad argument (the web layer answers 4xx)
        └── NotFoundError      the market (or thing) asked for is not known

A command that fails prints its error as one line (``gswarm: error: ...``) and exits with
its ``exit_code``; the message says what failed and what to do about it.
"""

from __future__ import annotations


class GswarmError(Exception):
    """Root of every error Gswarm raises on purpose."""

    exit_code = 1  # the status a command exits with when this error ends it


class ConfigError(GswarmError):
    """A setting or a command-line option has a bad value."""


class BrokerError(GswarmError):
    """The local Kafka broker cannot be fetched, started or reached."""


class MissingToolError(BrokerError):
    """A program the local broker needs (java, mvn) is not installed."""


class KafkaUnreachable(BrokerError):
    """No Kafka broker answers at the configured address, or it stopped answering."""


class KafkaAuthError(BrokerError):
    """The broker refused the SASL credentials, or the TLS handshake with it failed."""


class PortInUseError(GswarmError):
    """A port a server (a worker's web server, the local broker) must listen on is taken."""


class TopicError(GswarmError):
    """The topic declarations are invalid or cannot be applied, or a topic a command needs
    is missing or differs from its declaration."""


class TopicDriftError(TopicError):
    """Topics on the broker differ from their declarations (``gswarm topics apply``)."""

    exit_code = 3


class TickError(GswarmError):
    """A message is not a valid tick; ``reason`` is the dead-letter reason code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class FeedError(GswarmError):
    """A feed's input is unusable."""


class WorkerError(GswarmError):
    """A worker does not start, or does not answer."""


class QueryError(GswarmError):
    """A query has a bad argument."""


class NotFoundError(QueryError):
    """The market (or other thing) asked for is not known."""
