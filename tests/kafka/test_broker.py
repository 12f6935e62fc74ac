"""The local broker: a real Kafka process that starts, answers, is idempotent and stops."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gswarm.errors import MissingToolError
from gswarm.kafka.broker import LocalBroker, answers, require_tool
from tests.conftest import broker_settings


def test_session_broker_answers_metadata(kafka: LocalBroker) -> None:
    status = kafka.status()
    assert status.running and status.answering
    assert status.bootstrap == f"127.0.0.1:{kafka.settings.kafka_port}"


def test_lifecycle_start_twice_stop_twice(tmp_path: Path) -> None:
    broker = LocalBroker(broker_settings(tmp_path / "k"))
    try:
        assert broker.start() is True
        pid = broker.pid()
        assert pid is not None and answers(broker.bootstrap)
        # A second start finds the running broker: no second process.
        assert broker.start() is False
        assert broker.pid() == pid
        assert "process.roles=broker,controller" in broker.properties.read_text()
        assert (broker.logs / "server.log").exists(), "broker logs go to a file"
    finally:
        assert broker.stop() is True
    assert broker.pid() is None
    assert not os.path.exists(f"/proc/{pid}") or _zombie(pid)
    assert not answers(broker.bootstrap, timeout=2)
    assert broker.stop() is False  # stopping a stopped broker is fine


def test_restart_keeps_formatted_storage(tmp_path: Path) -> None:
    broker = LocalBroker(broker_settings(tmp_path / "k"))
    try:
        broker.start()
        meta = (broker.data / "meta.properties").read_text()
        broker.stop()
        broker.start()
        assert (broker.data / "meta.properties").read_text() == meta
        assert answers(broker.bootstrap)
    finally:
        broker.stop()


def test_missing_tool_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(MissingToolError, match="apt-get install maven"):
        require_tool("mvn")
    with pytest.raises(MissingToolError, match="JDK 17"):
        require_tool("java")


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_format_accepts_a_cluster_id_starting_with_a_dash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uuid

    # base64 of these bytes starts with "-": once formatting failed on such a random id
    dash_first = uuid.UUID(bytes=b"\xfb" + b"\x01" * 15)
    monkeypatch.setattr(uuid, "uuid4", lambda: dash_first)
    b = LocalBroker(broker_settings(tmp_path / "k"))
    b.write_properties()
    b.format_storage()
    assert "cluster.id=-" in (b.data / "meta.properties").read_text()
