"""Configuration: one module, documented defaults, clear errors, README in step."""

from __future__ import annotations

from pathlib import Path

import pytest

from gswarm.config import Settings, describe
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
        assert f"| `{env}` | `{default}` | {doc} |" in readme, env


def test_a_retired_setting_fails_with_what_replaced_it() -> None:
    with pytest.raises(ConfigError, match=r"GSWARM_BATCH_MAX.*GSWARM_BATCH_RUNS"):
        Settings.from_env({"GSWARM_BATCH_MAX": "4000"})
