"""aiohttp middleware: every error answer is JSON, and no traceback leaves the server."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Unknown paths and methods get a JSON 404/405; an unexpected error a JSON 500."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return web.json_response({"error": exc.reason}, status=exc.status)
    except Exception:
        log.exception("error answering %s %s", request.method, request.path_qs)
        return web.json_response({"error": "internal error (logged by the worker)"},
                                 status=500)
