"""Gswarm's exceptions, one root and a family per area.

    GswarmError
    ├── ConfigError            a setting has a bad value
    ├── BrokerError            the local Kafka broker cannot be fetched, started or reached
    │   └── MissingToolError   java or mvn is not installed
    ├── TopicError             topics/ is invalid, or a topic cannot be applied
    ├── TickError              a message is not a valid tick (carries the dead-letter reason)
    ├── FeedError              a feed's input (file, API) is unusable
    └── QueryError             a query has a bad argument (the web layer answers 4xx)
        └── NotFoundError      the market (or thing) asked for is not known
"""

from __future__ import annotations


class GswarmError(Exception):
    """Root of every error Gswarm raises on purpose."""


class ConfigError(GswarmError):
    """A setting has a bad value."""


class BrokerError(GswarmError):
    """The local Kafka broker cannot be fetched, started or reached."""


class MissingToolError(BrokerError):
    """A program the local broker needs (java, mvn) is not installed."""


class TopicError(GswarmError):
    """The topic declarations are invalid or cannot be applied."""


class TickError(GswarmError):
    """A message is not a valid tick; ``reason`` is the dead-letter reason code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class FeedError(GswarmError):
    """A feed's input is unusable."""


class QueryError(GswarmError):
    """A query has a bad argument."""


class NotFoundError(QueryError):
    """The market (or other thing) asked for is not known."""
