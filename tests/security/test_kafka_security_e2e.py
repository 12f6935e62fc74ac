"""Gswarm on a secured Kafka: TLS with a client certificate, SASL/SCRAM over plaintext and
over TLS. Topics applied, ticks fed and queries asked through the `gswarm` command, facts
written by a real worker; wrong credentials and untrusted certificates end a command with
one line and a non-zero status instead of a hang."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from gswarm.config import Settings
from gswarm.feeds.synthetic import synthetic_ticks
from gswarm.ports import free_port
from gswarm.runner import WorkerProcess
from tests.security.conftest import SecuredKafka
from tests.stream.conftest import wait_consumed
from tests.test_cli_errors import assert_fails, gswarm

pytestmark = pytest.mark.timeout(300)

MARKETS, COUNT, SEED = 12, 300, 5
TOKEN = "api-token-for-the-secured-tests"


def env_of(settings: Settings, **more: str) -> dict[str, str]:
    """The environment of a `gswarm` command run with ``settings``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("GSWARM_")}
    return {**base, **settings.to_env(), "GSWARM_KAFKA_TIMEOUT_S": "10", **more}


def ok(settings: Settings, *args: str) -> str:
    done = gswarm(list(args), env_of(settings))
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.parametrize("protocol", ["SSL", "SASL_PLAINTEXT", "SASL_SSL"])
def test_ticks_facts_and_queries_over_each_protocol(
    secured: SecuredKafka, workers: Callable[..., WorkerProcess], tmp_path: Path,
    protocol: str,
) -> None:
    settings = secured.settings(protocol, web_port=free_port(), api_token=TOKEN)
    if protocol == "SASL_SSL":  # the other mechanism, and the password from a file
        secret = tmp_path / "kafka-password"
        secret.write_text(settings.kafka_password + "\n")
        settings = settings.override(kafka_sasl_mechanism="SCRAM-SHA-256",
                                     kafka_password="", kafka_password_file=str(secret))
    assert "created   " in ok(settings, "topics", "apply")
    ok(settings, "feed", "synthetic", "--markets", str(MARKETS), "--count", str(COUNT),
       "--seed", str(SEED))
    worker = workers(settings)
    stats = wait_consumed(worker, COUNT)
    assert stats["ticks"] == COUNT and stats["dead_letters_total"] == 0

    ticks = list(synthetic_ticks(MARKETS, COUNT, SEED))
    market = ticks[-1]["market"]
    latest = json.loads(ok(settings, "query", "latest", market))
    assert latest["ticks"] == sum(t["market"] == market for t in ticks)
    assert latest["prob"] == pytest.approx(ticks[-1]["prob"])
    assert json.loads(ok(settings, "query", "stats"))["ticks"] == COUNT


def _bad(secured: SecuredKafka, case: str) -> Settings:
    s = secured.settings
    return {
        "wrong password": lambda: s("SASL_PLAINTEXT", kafka_password="not-the-password"),
        "unknown user": lambda: s("SASL_SSL", kafka_username="nobody"),
        "wrong mechanism": lambda: s("SASL_PLAINTEXT", kafka_sasl_mechanism="SCRAM-SHA-256",
                                    kafka_password="not-the-password"),
        "untrusted broker": lambda: s("SSL", kafka_ca_file=""),
        "untrusted broker, SASL": lambda: s("SASL_SSL", kafka_ca_file=""),
        "other CA": lambda: s("SSL", kafka_ca_file=str(secured.other_ca())),
        "no client certificate": lambda: s("SSL", kafka_cert_file="", kafka_key_file=""),
        "TLS to a SASL listener": lambda: s("SASL_PLAINTEXT", kafka_security_protocol="SSL"),
    }[case]()


REFUSED = ["refused SASL", "GSWARM_KAFKA_USERNAME", "GSWARM_KAFKA_PASSWORD"]
UNTRUSTED = ["TLS certificate", "not trusted", "GSWARM_KAFKA_CA_FILE"]
HUNG_UP = ["closed the connection", "GSWARM_KAFKA_SECURITY_PROTOCOL", "GSWARM_KAFKA_CERT_FILE"]


@pytest.mark.parametrize(("case", "command", "words"), [
    ("wrong password", ["topics", "list"], REFUSED),
    ("wrong password", ["feed", "synthetic", "--count", "10"], REFUSED),
    ("wrong password", ["worker"], REFUSED),
    ("unknown user", ["topics", "apply"], REFUSED),
    ("wrong mechanism", ["topics", "list"], REFUSED),
    ("untrusted broker", ["topics", "list"], UNTRUSTED),
    ("untrusted broker", ["feed", "synthetic", "--count", "10"], UNTRUSTED),
    ("untrusted broker, SASL", ["topics", "apply"], UNTRUSTED),
    ("other CA", ["topics", "list"], UNTRUSTED),
    ("no client certificate", ["topics", "list"], HUNG_UP),
    ("TLS to a SASL listener", ["topics", "list"], HUNG_UP),
])
def test_bad_credentials_fail_in_one_line(
    secured: SecuredKafka, case: str, command: list[str], words: list[str]
) -> None:
    settings = _bad(secured, case).override(web_port=free_port())
    done = gswarm(command, env_of(settings), timeout=60)
    assert_fails(done, 1, words)
    if settings.kafka_password:
        assert settings.kafka_password not in done.stderr + done.stdout
