"""A rate-limited JSON-over-HTTP client for the live feeds' REST APIs.

Every request first takes a token from a bucket refilled at ``per_minute / 60`` per second
(burst 1), so in any span of T seconds at most ``1 + per_minute * T / 60`` requests leave.
A 429 or 5xx answer, a timeout or a broken connection is retried after ``Retry-After`` (when
the server sends one) or a jittered exponential back-off; a 404 raises :class:`NotFound`;
any other 4xx raises :class:`HttpError` at once (retrying a bad request cannot help).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from gswarm.errors import FeedError
from gswarm.feeds.producer import TokenBucket

log = logging.getLogger(__name__)

Params = Mapping[str, str | int | float]


class HttpError(FeedError):
    """The API answered with an error that retrying cannot fix."""

    def __init__(self, status: int, url: str, detail: str) -> None:
        super().__init__(f"HTTP {status} from {url}: {detail}")
        self.status = status


class NotFound(HttpError):
    """The API answered 404 (unknown market, slug or bet)."""


def backoff(attempt: int, base_s: float, cap_s: float) -> float:
    """Full-jitter exponential back-off: uniform in [0, min(cap, base * 2**attempt)]."""
    return random.uniform(0.0, min(cap_s, base_s * 2.0 ** min(attempt, 30)))


@dataclass
class HttpStats:
    requests: int = 0  # requests sent (retries included)
    throttled: int = 0  # 429 answers
    retries: int = 0  # requests repeated after a 429, 5xx or network failure


class JsonApi:
    """GET JSON documents from one base URL, within a requests-per-minute budget."""

    def __init__(
        self, base_url: str, per_minute: float, *, session: aiohttp.ClientSession,
        timeout_s: float = 30.0, retries: int = 8, backoff_s: float = 1.0,
        backoff_cap_s: float = 60.0,
    ) -> None:
        if not per_minute > 0:
            raise FeedError(f"requests per minute must be > 0, got {per_minute}")
        self.base_url = base_url.rstrip("/")
        self.session = session
        self.bucket = TokenBucket(per_minute / 60.0, capacity=1.0)
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.retries = retries
        self.backoff_s, self.backoff_cap_s = backoff_s, backoff_cap_s
        self.stats = HttpStats()

    async def get(self, path: str, params: Params | None = None) -> Any:
        """The decoded JSON body of ``GET base_url + path``, after retries if needed."""
        url = self.base_url + path
        query = {k: str(v).lower() if isinstance(v, bool) else str(v)
                 for k, v in (params or {}).items()}
        for attempt in range(self.retries + 1):
            await self.bucket.take(1)
            self.stats.requests += 1
            try:
                async with self.session.get(url, params=query, timeout=self.timeout) as resp:
                    body = await resp.read()
                    if resp.status == 200:
                        try:
                            return orjson.loads(body)
                        except orjson.JSONDecodeError as exc:
                            raise HttpError(200, url, f"not JSON: {exc}") from exc
                    if resp.status == 429 or resp.status >= 500:
                        self.stats.throttled += resp.status == 429
                        wait = _retry_after(resp.headers.get("Retry-After"))
                        problem = f"HTTP {resp.status}"
                    else:
                        error = NotFound if resp.status == 404 else HttpError
                        raise error(resp.status, url, _message(body))
            except (aiohttp.ClientError, TimeoutError) as exc:
                wait, problem = None, f"{type(exc).__name__}: {exc}"
            if attempt == self.retries:
                raise FeedError(f"GET {url} failed {attempt + 1} times (last: {problem}): "
                                "check the network, or the API's address setting")
            delay = wait if wait is not None else backoff(attempt, self.backoff_s,
                                                          self.backoff_cap_s)
            self.stats.retries += 1
            log.warning("GET %s: %s; retrying in %.1fs", url, problem, delay)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header given in seconds (dates are not used here)."""
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _message(body: bytes) -> str:
    """The API's error message (``{"message": ...}`` or ``{"error": ...}``), else the body."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:200].decode(errors="replace")
    if isinstance(doc, dict):
        for name in ("message", "error"):
            if isinstance(doc.get(name), str):
                return str(doc[name])[:200]
    return body[:200].decode(errors="replace")
