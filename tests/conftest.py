"""Session fixtures: one real Kafka broker on free loopback ports, settings factories."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gswarm.config import Settings
from gswarm.kafka.broker import LocalBroker
from gswarm.ports import free_port

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def broker_settings(home: Path) -> Settings:
    """Settings for a private broker under ``home`` on free ports (jars shared)."""
    kafka_port, controller_port = free_port(), free_port()
    libs = os.environ.get("GSWARM_KAFKA_LIBS")
    base = Settings.from_env({"GSWARM_KAFKA_LIBS": libs} if libs else {})
    return base.override(
        kafka_dir=home,
        kafka_port=kafka_port,
        kafka_controller_port=controller_port,
        broker=f"127.0.0.1:{kafka_port}",
    )


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    """A real Apache Kafka broker for the whole session, stopped by its PID at the end."""
    broker = LocalBroker(broker_settings(tmp_path_factory.mktemp("kafka")))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


_app_ids = itertools.count()


@pytest.fixture
def settings_factory(
    kafka: LocalBroker, tmp_path: Path
) -> Callable[..., Settings]:
    """Settings bound to the session broker, with a unique app id (so unique topics)."""

    def make(**overrides: Any) -> Settings:
        app_id = overrides.pop("app_id", f"t{os.getpid()}-{next(_app_ids)}")
        return kafka.settings.override(
            app_id=app_id, data_dir=tmp_path / f"data-{app_id}", **overrides
        )

    return make
