"""A consumer group's members, and removing a member whose process is known to be dead.

Kafka notices a dead consumer only when its session expires (``broker_session_timeout``):
until then the group keeps waiting for it and nobody ingests its partitions. A supervisor
that saw its worker's process exit knows more than the broker does. :func:`evict` tells the
group coordinator at once, with the same LeaveGroup request a consumer sends when it stops
cleanly, naming the dead worker's member id; the coordinator starts the rebalance that the
session expiry would have started later.

A Faust worker's member is found by its web URL: Faust puts the URL in the member metadata
it joins with (the assignor's ``ClientMetadata``, JSON), which DescribeGroups returns. Only
members with that URL are removed; a member already gone is not an error.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from aiokafka.client import AIOKafkaClient, CoordinationType
from aiokafka.coordinator.protocol import ConsumerProtocolMemberMetadata
from aiokafka.errors import for_code
from aiokafka.protocol.admin import DescribeGroupsRequest
from aiokafka.protocol.group import LeaveGroupRequest

from gswarm.config import Settings
from gswarm.kafka import security

log = logging.getLogger(__name__)

UNKNOWN_MEMBER_ID = 25  # LeaveGroup for a member the group no longer has


@dataclass(frozen=True)
class Member:
    member_id: str
    client_id: str
    url: str | None  # the Faust worker's web URL, if its metadata carries one


def worker_url(metadata: bytes) -> str | None:
    """The web URL in a Faust member's subscription metadata (``None`` if not Faust's)."""
    try:
        user_data = ConsumerProtocolMemberMetadata.decode(metadata).user_data
        url = json.loads(user_data).get("url")
    except Exception:  # another client's metadata: not a Faust worker
        return None
    return url if isinstance(url, str) else None


async def _client(settings: Settings) -> AIOKafkaClient:
    client = AIOKafkaClient(bootstrap_servers=settings.broker, client_id="gswarm-groups",
                            request_timeout_ms=int(settings.kafka_timeout_s * 1000),
                            **security.options(settings))
    await client.bootstrap()
    return client


async def _members(client: AIOKafkaClient, coordinator: int, group: str) -> list[Member]:
    response: Any = await client.send(coordinator, DescribeGroupsRequest([group]))
    described, = response.groups
    error_code, members = described[0], described[5]  # the same places in every version
    if error_code:
        raise for_code(error_code)(f"DescribeGroups {group}")
    return [Member(member_id, client_id, worker_url(metadata))
            for member_id, client_id, _host, metadata, _assignment in members]


async def members(settings: Settings, group: str) -> list[Member]:
    """The members of consumer group ``group`` as its coordinator sees them now."""
    client = await _client(settings)
    try:
        coordinator = await client.coordinator_lookup(CoordinationType.GROUP, group)
        return await _members(client, coordinator, group)
    finally:
        await client.close()


async def evict(settings: Settings, group: str, url: str,
                only: set[str] | None = None) -> list[str]:
    """Remove from ``group`` every member whose worker URL is ``url`` (and whose id is in
    ``only``, if given); the member ids removed.

    Only for a worker whose process is known to have exited: a live member removed this
    way finds out at its next heartbeat and joins again (one more rebalance, nothing lost).
    """
    client = await _client(settings)
    try:
        coordinator = await client.coordinator_lookup(CoordinationType.GROUP, group)
        gone = []
        for member in await _members(client, coordinator, group):
            if member.url != url or (only is not None and member.member_id not in only):
                continue
            response: Any = await client.send(
                coordinator, LeaveGroupRequest(group, member.member_id))
            if response.error_code not in (0, UNKNOWN_MEMBER_ID):
                raise for_code(response.error_code)(f"LeaveGroup {group} {member.member_id}")
            gone.append(member.member_id)
        return gone
    finally:
        await client.close()
