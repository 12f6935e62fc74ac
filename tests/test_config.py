"""Configuration: one module, documented defaults, clear errors, README in step."""

from __future__ import annotations

from pathlib import Path

import pytest

from gswarm.config import Settings, describe, markdown_row
from gswarm.errors import ConfigError

README = Path(__file__).resolve().parents[1] / "README.md"


def test_defaults_and_env_overrides() -> None:
    s = Settings.from_env({})
    assert (s.broker, s.partitions, s.lean, s.retention_s) == ("127.0.0.1:9092", 8, True, 3600)
    s = Settings.from_env({"GSWARM_PARTITIONS": "4", "GSWARM_LEAN": "no",
                           "GSWARM_BROKER": "127.0.0.1:1"})
    assert (s.partitions, s.lean, s.broker) == (4, False, "127.0.0.1:1")
    assert s.override(partitions=2, broker=None).partitions == 2


@pytest.mark.parametrize("env", [
    {"GSWARM_PARTITIONS": "eight"}, {"GSWARM_PARTITIONS": "0"},
    {"GSWARM_LEAN": "maybe"}, {"GSWARM_WEB_PORT": "70000"}, {"GSWARM_LOG_LEVEL": "warning"},
])
def test_bad_values_name_the_variable(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match=next(iter(env))):
        Settings.from_env(env)


def test_readme_documents_every_setting() -> None:
    readme = README.read_text()
    for env, default, doc in describe():
        assert markdown_row(env, default, doc) in readme, env


def test_a_retired_setting_fails_with_what_replaced_it() -> None:
    with pytest.raises(ConfigError, match=r"GSWARM_BATCH_MAX.*GSWARM_BATCH_RUNS"):
        Settings.from_env({"GSWARM_BATCH_MAX": "4000"})


def test_secrets_are_never_shown() -> None:
    s = Settings.from_env({"GSWARM_KAFKA_PASSWORD": "hunter2-kafka",
                           "GSWARM_API_TOKEN": "hunter2-token"})
    shown = dict(s.shown())
    assert shown["GSWARM_KAFKA_PASSWORD"] == shown["GSWARM_API_TOKEN"] == "***"
    assert shown["GSWARM_KAFKA_USERNAME"] == "" and shown["GSWARM_BROKER"] == s.broker
    assert "hunter2" not in repr(s)
    assert dict(Settings.from_env({}).shown())["GSWARM_API_TOKEN"] == ""  # unset: empty


def test_config_current_masks_secrets() -> None:
    from click.testing import CliRunner

    from gswarm.cli import cli

    env = {"GSWARM_KAFKA_PASSWORD": "hunter2-kafka", "GSWARM_API_TOKEN": "hunter2-token"}
    done = CliRunner().invoke(cli, ["config", "--current"], env=env)
    assert done.exit_code == 0, done.output
    assert "GSWARM_KAFKA_PASSWORD=***" in done.output and "hunter2" not in done.output


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "::", "gswarm-1.internal"])
def test_a_wide_web_bind_needs_a_token(host: str) -> None:
    with pytest.raises(ConfigError, match="GSWARM_API_TOKEN"):
        Settings.from_env({"GSWARM_WEB_HOST": host})
    assert Settings.from_env({"GSWARM_WEB_HOST": host, "GSWARM_API_TOKEN": "t"}).api_token


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1"])
def test_loopback_needs_no_token(host: str) -> None:
    assert Settings.from_env({"GSWARM_WEB_HOST": host}).web_host == host
