"""The one mapping from settings to Kafka clients' security options (no broker needed;
the secured broker's tests are in tests/security)."""

from __future__ import annotations

import ssl
from pathlib import Path

import faust
import pytest

from gswarm.config import Settings
from gswarm.errors import ConfigError
from gswarm.kafka import security
from tests.security.pki import Authority

BASE = {"GSWARM_BROKER": "kafka.example.com:9093"}


def settings(**env: str) -> Settings:
    return Settings.from_env({**BASE, **env})


def test_plaintext_is_the_default_and_adds_nothing() -> None:
    s = settings()
    assert security.client_kwargs(s) == {"bootstrap_servers": "kafka.example.com:9093",
                                         "security_protocol": "PLAINTEXT"}
    assert security.faust_credentials(s) is None
    assert security.kcat_config(s) == {"bootstrap.servers": "kafka.example.com:9093",
                                       "security.protocol": "plaintext"}


def test_sasl_ssl_with_scram_and_a_password_file(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("from-a-file\nignored\n")
    s = settings(GSWARM_KAFKA_SECURITY_PROTOCOL="SASL_SSL",
                 GSWARM_KAFKA_SASL_MECHANISM="SCRAM-SHA-512", GSWARM_KAFKA_USERNAME="alice",
                 GSWARM_KAFKA_PASSWORD_FILE=str(secret))
    kwargs = security.client_kwargs(s)
    assert isinstance(kwargs.pop("ssl_context"), ssl.SSLContext)
    assert kwargs == {"bootstrap_servers": "kafka.example.com:9093",
                      "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
                      "sasl_plain_username": "alice", "sasl_plain_password": "from-a-file"}
    creds = security.faust_credentials(s)
    assert isinstance(creds, faust.SASLCredentials)
    assert (creds.protocol.value, creds.mechanism.value) == ("SASL_SSL", "SCRAM-SHA-512")
    assert (creds.username, creds.password) == ("alice", "from-a-file")
    assert security.kcat_config(s)["sasl.password"] == "from-a-file"


def test_ssl_with_a_client_certificate(tmp_path: Path) -> None:
    pki = Authority(tmp_path)
    client = pki.issue("client", server=False)
    s = settings(GSWARM_KAFKA_SECURITY_PROTOCOL="SSL", GSWARM_KAFKA_CA_FILE=str(pki.ca_file),
                 GSWARM_KAFKA_CERT_FILE=str(client.cert), GSWARM_KAFKA_KEY_FILE=str(client.key))
    context = security.client_kwargs(s)["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    creds = security.faust_credentials(s)
    assert isinstance(creds, faust.SSLCredentials) and creds.protocol.value == "SSL"
    assert security.kcat_config(s)["ssl.key.location"] == str(client.key)


def test_sasl_plaintext_has_no_tls() -> None:
    s = settings(GSWARM_KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT", GSWARM_KAFKA_USERNAME="u",
                 GSWARM_KAFKA_PASSWORD="p")
    assert "ssl_context" not in security.client_kwargs(s)
    assert security.faust_credentials(s).protocol.value == "SASL_PLAINTEXT"


@pytest.mark.parametrize(("env", "words"), [
    ({"GSWARM_KAFKA_SECURITY_PROTOCOL": "TLS"}, "one of PLAINTEXT, SSL"),
    ({"GSWARM_KAFKA_SASL_MECHANISM": "GSSAPI"}, "GSWARM_KAFKA_SASL_MECHANISM"),
    ({"GSWARM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "needs GSWARM_KAFKA_USERNAME"),
    ({"GSWARM_KAFKA_PASSWORD": "a", "GSWARM_KAFKA_PASSWORD_FILE": "/f"}, "keep one"),
    ({"GSWARM_KAFKA_CERT_FILE": "/c.pem"}, "go together"),
])
def test_bad_security_settings_say_what_to_fix(env: dict[str, str], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        settings(**env)


@pytest.mark.parametrize(("env", "words"), [
    ({"GSWARM_KAFKA_PASSWORD_FILE": "/no/such/file"}, "GSWARM_KAFKA_PASSWORD_FILE"),
    ({"GSWARM_KAFKA_CA_FILE": "/no/such/ca.pem"}, "GSWARM_KAFKA_CA_FILE"),
    ({"GSWARM_KAFKA_CERT_FILE": "/no/c.pem", "GSWARM_KAFKA_KEY_FILE": "/no/k.pem"},
     "GSWARM_KAFKA_CERT_FILE"),
])
def test_unreadable_files_name_their_setting(env: dict[str, str], words: str) -> None:
    s = settings(GSWARM_KAFKA_SECURITY_PROTOCOL="SASL_SSL", GSWARM_KAFKA_USERNAME="u", **env)
    with pytest.raises(ConfigError, match=words):
        security.client_kwargs(s)
