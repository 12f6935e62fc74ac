"""Topics as code: apply creates the declared topics, is idempotent, and reports drift."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from gswarm.config import Settings
from gswarm.errors import TopicError
from gswarm.kafka import topics


async def test_apply_creates_declared_topics_with_their_configs(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory(partitions=6)
    specs = topics.load(settings)
    names = {s.name for s in specs}
    assert {settings.tick_topic, settings.deadletter_topic, settings.signals_topic} <= names

    report = await topics.apply(settings)
    assert sorted(report.created) == sorted(names)
    assert report.drift == []

    listed = {s.name: a for s, a in await topics.describe_declared(settings)}
    for spec in specs:
        actual = listed[spec.name]
        assert actual is not None
        assert actual["partitions"] == spec.partitions
        for key, value in spec.configs.items():
            assert actual["configs"][key] == value
    ticks = next(s for s in specs if s.name == settings.tick_topic)
    assert ticks.partitions == 6


async def test_apply_twice_changes_nothing(settings_factory: Callable[..., Settings]) -> None:
    settings = settings_factory()
    await topics.apply(settings)
    again = await topics.apply(settings)
    assert again.created == [] and again.drift == []
    assert len(again.unchanged) == len(topics.load(settings))


async def test_drift_in_partitions_and_config_is_reported(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory(partitions=8)
    await topics.apply(settings)

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.broker)
    await admin.start()
    try:
        await admin.alter_configs([
            ConfigResource(ConfigResourceType.TOPIC, settings.tick_topic,
                           configs={"retention.ms": "1000"}),
        ])
        # Config changes reach the broker's view asynchronously: wait until visible.
        for _ in range(100):
            seen = await topics.describe(admin, [settings.tick_topic])
            if seen[settings.tick_topic]["configs"]["retention.ms"] == "1000":
                break
            await asyncio.sleep(0.1)
    finally:
        await admin.close()

    report = await topics.apply(settings.override(partitions=4))
    assert any(
        settings.tick_topic in d and "8 partitions, declared 4" in d for d in report.drift
    )
    assert any(
        settings.tick_topic in d and "retention.ms=1000" in d for d in report.drift
    )
    # Drift is reported, never "fixed" by repartitioning.
    described = {s.name: a for s, a in await topics.describe_declared(settings)}
    tick = described[settings.tick_topic]
    assert tick is not None and tick["partitions"] == 8


def test_bad_declaration_is_a_clear_error(tmp_path, settings_factory) -> None:
    bad = tmp_path / "topics.toml"
    bad.write_text('[[topic]]\nname = "x"\npartitons = 3\n')
    with pytest.raises(TopicError, match="partitons"):
        topics.load(settings_factory(), bad)
