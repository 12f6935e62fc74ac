"""The token check itself (the workers' answers are in test_access_e2e.py)."""

from __future__ import annotations

import pytest

from gswarm.web.access import authorized, bearer, is_public

TOKEN = "0123456789abcdef"


@pytest.mark.parametrize(("header", "ok"), [
    (f"Bearer {TOKEN}", True), (f"bearer {TOKEN}", True), (f"Bearer  {TOKEN} ", True),
    (None, False), ("", False), ("Bearer", False), ("Bearer ", False),
    (f"Bearer {TOKEN}x", False), (f"Bearer {TOKEN[:-1]}", False), (f"Basic {TOKEN}", False),
    (TOKEN, False), ("Bearer ünïcödé", False),
])
def test_only_the_bearer_token_is_authorized(header: str | None, ok: bool) -> None:
    assert authorized(header, TOKEN) is ok


@pytest.mark.parametrize(("path", "public"), [
    ("/api/health", True), ("/", True), ("/static/dashboard.js", True),
    ("/api/health/", False), ("/api/stats", False), ("/metrics", False),
    ("/api/openapi.json", False), ("/static/../api/stats", False),
    ("/static/./x/../../metrics", False), ("/router", False),
])
def test_public_paths(path: str, public: bool) -> None:
    assert is_public(path) is public


def test_no_token_sends_no_header() -> None:
    assert bearer("") == {} and bearer(TOKEN) == {"Authorization": f"Bearer {TOKEN}"}
