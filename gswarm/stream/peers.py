"""Peer workers that died: evicted from the group at once, not after their session expires.

Every ``GSWARM_PEER_PROBE_S`` a worker opens (and closes) a TCP connection to each peer's
web port, the peers being the other members of the group as Faust's assignor lists them.
A peer that answered before and now refuses twice in a row has died without leaving the
group (:mod:`gswarm.core.peers`): the worker sends the coordinator the LeaveGroup that peer
never sent (:func:`gswarm.kafka.groups.evict`), naming only the member ids seen at that URL
while it lived, and the rebalance starts now. Several survivors may do it at once; the
second finds the member gone. A peer that is slow, or whose host is down (no refusal, only
silence), is left to the session timeout. The supervisor of ``gswarm cluster`` evicts its
own dead workers the same way (:mod:`gswarm.cluster`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import urlsplit

from gswarm.core.peers import Liveness, Members
from gswarm.kafka import groups
from gswarm.stream.app import app, settings

log = logging.getLogger(__name__)

liveness = Liveness()
members = Members()


async def probe(url: str) -> bool | None:
    """True if ``url``'s port accepts a connection, False if it is refused, None if unknown."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        async with asyncio.timeout(max(settings.peer_probe_s, 0.1)):
            _, writer = await asyncio.open_connection(parts.hostname, port)
    except ConnectionRefusedError:
        return False
    except (OSError, TimeoutError):
        return None
    writer.close()
    return True


async def describe() -> None:
    """Note which member ids are at which worker URL (after each rebalance)."""
    try:
        found = await groups.members(settings, settings.app_id)
    except Exception as exc:  # the next rebalance tries again; eviction waits for it
        log.info("peers: could not describe group %s: %s", settings.app_id, exc)
        return
    members.seen((m.member_id, m.url) for m in found)


async def evict(url: str) -> None:
    ids = members.at(url)
    if not ids:
        log.info("peers: %s refuses connections; no member id known, waiting for its "
                 "session to expire", url)
        return
    try:
        gone = await groups.evict(settings, settings.app_id, url, only=ids)
    except Exception as exc:
        log.warning("peers: %s died; could not evict it (%s): its session will expire",
                    url, exc)
        return
    log.warning("peers: %s died (connection refused); evicted %s from group %s", url,
                ", ".join(gone) or "nothing (already gone)", settings.app_id)


if settings.peer_probe_s > 0:

    @app.on_rebalance_complete.connect
    async def describe_after_rebalance(sender: Any, /, *args: Any, signal: Any = None,
                                       **kwargs: Any) -> None:
        app.add_future(describe())

    @app.timer(interval=settings.peer_probe_s)  # type: ignore[untyped-decorator]
    async def watch_peers() -> None:
        me = str(app.conf.canonical_url)
        urls = [str(u) for u in app.router.tables_metadata() if str(u) != me]
        liveness.keep(urls)
        for url, alive in zip(urls, await asyncio.gather(*map(probe, urls)), strict=True):
            if alive:
                liveness.answered(url)
            elif alive is False and liveness.refused(url):
                await evict(url)
