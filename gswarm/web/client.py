"""Asking a worker's web API from a command or a test: token and TLS from the settings."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from gswarm.config import Settings
from gswarm.web.access import bearer, client_context


def open_url(settings: Settings, url: str, timeout: float) -> Any:
    """``urlopen`` of ``url`` with ``settings``' API token and web CA (raises as urlopen)."""
    request = urllib.request.Request(url, headers=bearer(settings.api_token))
    return urllib.request.urlopen(request, timeout=timeout, context=client_context(settings))


def get_json(settings: Settings, url: str, timeout: float = 10.0) -> Any:
    """GET a JSON document."""
    with open_url(settings, url, timeout) as resp:
        return json.loads(resp.read())
