"""Who may ask a worker: a bearer token on every route but the public ones.

With ``GSWARM_API_TOKEN`` set (required when the web server binds beyond loopback, see
:class:`~gswarm.config.Settings`), every request must carry ``Authorization: Bearer TOKEN``,
compared in constant time; without it the answer is a JSON 401 like the other errors.
Public: ``/api/health`` (liveness, for supervisors and load balancers) and the dashboard's
page and static assets (they hold no data; the page asks for the token and sends it on its
own requests). Workers send the token to each other: their HTTP client carries it
(:func:`peer_session`), and a routed request keeps the caller's header.
"""

from __future__ import annotations

import hmac
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web

from gswarm.config import Settings

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]

PUBLIC = ("/api/health", "/")
PUBLIC_PREFIXES = ("/static/",)


def is_public(path: str) -> bool:
    """True for the routes that answer without the token (never a path with dot segments,
    which could lead a prefix elsewhere)."""
    if any(part in (".", "..") for part in path.split("/")):
        return False
    return path in PUBLIC or path.startswith(PUBLIC_PREFIXES)


def authorized(header: str | None, token: str) -> bool:
    """True if ``header`` (an ``Authorization`` value) is ``Bearer <token>``."""
    scheme, _, given = (header or "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


def bearer(token: str) -> dict[str, str]:
    """The request headers that carry ``token`` (none for an empty one)."""
    return {"Authorization": f"Bearer {token}"} if token else {}


def require_token(token: str) -> Middleware:
    """aiohttp middleware: a JSON 401 for a request without the bearer ``token``."""

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if is_public(request.path) or authorized(request.headers.get("Authorization"), token):
            return await handler(request)
        missing = "Authorization" not in request.headers
        error = ("this API needs a bearer token: send `Authorization: Bearer <token>` (the "
                 "worker's GSWARM_API_TOKEN)" if missing else "wrong API token")
        return web.json_response({"error": error}, status=401,
                                 headers={"WWW-Authenticate": 'Bearer realm="gswarm"'})

    return check


def middlewares(settings: Settings) -> list[Middleware]:
    """The access middlewares for ``settings`` (none when no token is set)."""
    return [require_token(settings.api_token)] if settings.api_token else []


def server_context(settings: Settings) -> ssl.SSLContext | None:
    """The web server's TLS context (``None``: plain HTTP)."""
    if not settings.web_tls:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.web_cert_file, settings.web_key_file)
    return context


def client_context(settings: Settings) -> ssl.SSLContext | None:
    """How a client verifies workers' HTTPS (``None``: the default, system CAs)."""
    if not settings.web_ca_file:
        return None
    return ssl.create_default_context(cafile=settings.web_ca_file)


def peer_session(settings: Settings) -> Callable[[], aiohttp.ClientSession]:
    """Faust's ``HttpClient``: a session that sends the token and trusts the web CA, used
    when a worker gathers from or routes to the others."""

    def make(**kwargs: Any) -> aiohttp.ClientSession:
        context = client_context(settings)
        connector = aiohttp.TCPConnector(ssl=context) if context is not None else None
        return aiohttp.ClientSession(headers=bearer(settings.api_token),
                                     connector=connector, **kwargs)

    return make
