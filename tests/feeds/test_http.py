"""The feeds' HTTP client: jittered back-off, Retry-After, and what is not retried."""

from __future__ import annotations

import time

import aiohttp
import pytest
from aiohttp import web

from gswarm.errors import FeedError
from gswarm.feeds.http import JsonApi, backoff
from gswarm.ports import free_port

pytestmark = pytest.mark.timeout(60)


def test_backoff_is_jittered_exponential_and_capped() -> None:
    for attempt in range(12):
        waits = [backoff(attempt, 0.5, 10.0) for _ in range(200)]
        bound = min(10.0, 0.5 * 2**attempt)
        assert all(0 <= w <= bound for w in waits)
        assert len(set(waits)) > 150  # jittered: reconnecting clients do not stampede
        assert max(waits) > bound * 0.8


async def test_retry_after_is_honoured_and_a_dead_server_gives_up_clearly() -> None:
    answers = [web.json_response({"error": "busy"}, status=503, headers={"Retry-After": "0.5"}),
               web.json_response({"error": "slow down"}, status=429,
                                 headers={"Retry-After": "0.3"}),
               web.json_response([1, 2, 3])]
    seen: list[float] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(time.monotonic())
        return answers[len(seen) - 1]

    app = web.Application()
    app.router.add_get("/x", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with aiohttp.ClientSession() as session:
            api = JsonApi(f"http://127.0.0.1:{port}", 60_000, session=session, backoff_s=0.01)
            assert await api.get("/x") == [1, 2, 3]
            assert seen[1] - seen[0] >= 0.45 and seen[2] - seen[1] >= 0.25
            assert api.stats.throttled == 1 and api.stats.retries == 2
    finally:
        await runner.cleanup()
    async with aiohttp.ClientSession() as session:
        api = JsonApi(f"http://127.0.0.1:{free_port()}", 60_000, session=session,
                      retries=2, backoff_s=0.01)
        with pytest.raises(FeedError, match="failed 3 times"):
            await api.get("/x")
