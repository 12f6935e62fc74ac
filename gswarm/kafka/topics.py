"""Topics as code: the declarations in ``topics/topics.toml``, applied idempotently.

``apply`` creates what is missing and reports drift (a partition count, replication factor or
config that differs from the declaration) instead of silently ignoring it. It never changes a
partition count: adding partitions to a keyed topic moves markets between shards.
"""

from __future__ import annotations

import asyncio
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gswarm.config import PROJECT_ROOT, Settings
from gswarm.errors import TopicError
from gswarm.kafka import security

TOPICS_FILE = PROJECT_ROOT / "topics" / "topics.toml"

_CONFIG_KEYS = {
    "cleanup_policy": "cleanup.policy",
    "retention_ms": "retention.ms",
    "max_message_bytes": "max.message.bytes",
    "min_compaction_lag_ms": "min.compaction.lag.ms",
    "segment_ms": "segment.ms",
}


@dataclass(frozen=True)
class TopicSpec:
    """One declared topic with its full name resolved for an app id."""

    name: str
    partitions: int
    replication: int
    configs: dict[str, str]
    doc: str = ""
    short: str = ""  # the name declared, without the app id
    default_partitions: bool = False  # partitions = "default": GSWARM_PARTITIONS


@dataclass
class ApplyReport:
    """What ``apply`` did: topics created, topics already right, and drift found."""

    created: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    drift: list[str] = field(default_factory=list)


def load(settings: Settings, path: Path = TOPICS_FILE) -> list[TopicSpec]:
    """Read and check the declarations; names get the ``<app_id>-`` prefix."""
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise TopicError(f"cannot read {path}: {exc}") from exc
    specs = [_spec(entry, settings, path) for entry in raw.get("topic", [])]
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise TopicError(f"{path}: a topic is declared twice")
    return specs


def _spec(entry: dict[str, Any], settings: Settings, path: Path) -> TopicSpec:
    unknown = set(entry) - {"name", "doc", "partitions", "replication", *_CONFIG_KEYS}
    if "name" not in entry or unknown:
        raise TopicError(f"{path}: bad topic entry {entry!r} (unknown keys: {sorted(unknown)})")
    partitions = entry.get("partitions", "default")
    default = partitions == "default"
    partitions = settings.partitions if default else partitions
    replication = entry.get("replication", settings.replication)
    if not isinstance(partitions, int) or partitions < 1 or not isinstance(replication, int):
        raise TopicError(f"{path}: topic {entry['name']!r} has a bad partition/replication")
    configs = {_CONFIG_KEYS[k]: str(v) for k, v in entry.items() if k in _CONFIG_KEYS}
    return TopicSpec(
        name=f"{settings.app_id}-{entry['name']}",
        partitions=partitions,
        replication=replication,
        configs=configs,
        doc=entry.get("doc", ""),
        short=entry["name"],
        default_partitions=default,
    )


async def apply(settings: Settings, specs: list[TopicSpec] | None = None) -> ApplyReport:
    """Create missing topics, compare existing ones with their declaration."""
    from aiokafka.admin import NewTopic

    specs = load(settings) if specs is None else specs
    report = ApplyReport()
    admin = _admin(settings)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        if missing:
            resp = await admin.create_topics(
                [NewTopic(s.name, s.partitions, s.replication, topic_configs=s.configs)
                 for s in missing]
            )
            for name, code, *rest in resp.topic_errors:
                if code == 36:  # TOPIC_ALREADY_EXISTS: another apply won the race
                    existing.add(name)
                elif code != 0:
                    raise TopicError(f"creating {name} failed: error {code} {rest}")
            report.created = [s.name for s in missing if s.name not in existing]
            await _wait_visible(admin, report.created)
        present = [s for s in specs if s.name in existing]
        if present:
            described = await describe(admin, [s.name for s in present])
            for spec in present:
                drift = _drift(spec, described[spec.name])
                (report.drift.extend(drift) if drift else report.unchanged.append(spec.name))
    finally:
        await admin.close()
    return report


async def _wait_visible(admin: Any, names: list[str], timeout: float = 30.0) -> None:
    """Wait until the broker's metadata lists ``names`` with leaders (creation is async)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while names:
        topics = await admin.describe_topics(names)
        ready = {
            t["topic"] for t in topics
            if t["error_code"] == 0 and t["partitions"]
            and all(p["leader"] >= 0 for p in t["partitions"])
        }
        if ready >= set(names):
            return
        if asyncio.get_running_loop().time() > deadline:
            late = sorted(set(names) - ready)
            raise TopicError(f"topics not visible after {timeout:.0f}s: {late}")
        await asyncio.sleep(0.1)


async def describe(admin: Any, names: list[str]) -> dict[str, dict[str, Any]]:
    """Partitions, replication factor and configs of existing topics."""
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    meta = {t["topic"]: t for t in await admin.describe_topics(names)}
    responses = await admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, n) for n in names]
    )
    configs: dict[str, dict[str, str]] = {}
    for resp in responses:
        for _code, _msg, _rtype, rname, entries in resp.resources:
            configs[rname] = {e[0]: e[1] for e in entries}
    out = {}
    for name in names:
        parts = meta[name]["partitions"]
        out[name] = {
            "partitions": len(parts),
            "replication": min((len(p["replicas"]) for p in parts), default=0),
            "configs": configs.get(name, {}),
        }
    return out


def _drift(spec: TopicSpec, actual: dict[str, Any]) -> list[str]:
    drift = []
    if actual["partitions"] != spec.partitions:
        drift.append(
            f"{spec.name}: {actual['partitions']} partitions, declared {spec.partitions} "
            "(not changed: repartitioning a keyed topic moves markets between shards)"
        )
    if actual["replication"] != spec.replication:
        drift.append(
            f"{spec.name}: replication {actual['replication']}, declared {spec.replication}"
        )
    for key, want in spec.configs.items():
        have = actual["configs"].get(key)
        if have != want:
            drift.append(f"{spec.name}: {key}={have}, declared {want}")
    return drift


async def describe_declared(
    settings: Settings, names: Iterable[str] | None = None,
) -> list[tuple[TopicSpec, dict[str, Any] | None]]:
    """Each declared topic (or those of ``names``, declared names such as ``"ticks"``) with
    the broker's view of it (``None`` if missing)."""
    specs = load(settings)
    if names is not None:
        wanted = set(names)
        specs = [s for s in specs if s.short in wanted]
    admin = _admin(settings)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        present = [s.name for s in specs if s.name in existing]
        described = await describe(admin, present) if present else {}
    finally:
        await admin.close()
    return [(s, described.get(s.name)) for s in specs]


async def require(settings: Settings, names: Iterable[str] | None = None) -> None:
    """Raise :class:`TopicError` unless each declared topic of ``names`` (default: all)
    exists with its declared number of partitions (a command about to use them asks)."""
    for spec, actual in await describe_declared(settings, names):
        if actual is None:
            raise TopicError(
                f"topic {spec.name} does not exist on {settings.broker}: create the topics "
                "with `gswarm topics apply` (same --app-id and --partitions)")
        have = actual["partitions"]
        if have != spec.partitions:
            fix = (f"GSWARM_PARTITIONS (--partitions) is {spec.partitions}: run with "
                   f"--partitions {have}, or delete" if spec.default_partitions
                   else f"topics/topics.toml declares {spec.partitions}: delete")
            raise TopicError(f"topic {spec.name} has {have} partitions but {fix} the topic "
                             "and run `gswarm topics apply`")


def _admin(settings: Settings) -> Any:
    from aiokafka.admin import AIOKafkaAdminClient

    return AIOKafkaAdminClient(**security.client_kwargs(settings),
                               request_timeout_ms=int(settings.kafka_timeout_s * 1000))
