"""A real Kafka broker with secured listeners (TLS with client certificates, SASL/SCRAM
and PLAIN over plaintext and over TLS), one per test module, stopped by its PID."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gswarm.config import Settings
from gswarm.kafka.broker import Listener, LocalBroker, Security
from gswarm.ports import free_port
from tests.conftest import broker_settings
from tests.security.pki import Authority, Issued
from tests.stream.conftest import workers

USER, PASSWORD = "gswarm-test", "s3cret-Pa55"
PROTOCOLS = ("SSL", "SASL_PLAINTEXT", "SASL_SSL")
SCRAM = ("SCRAM-SHA-256", "SCRAM-SHA-512")
_app_ids = itertools.count()


def broker_security(pki: Authority, broker: Issued, home: Path) -> Security:
    """Listeners SSL (client certificate required), SASL_PLAINTEXT and SASL_SSL (PLAIN and
    SCRAM users), all signed by ``pki``."""
    listeners = tuple(Listener(name, free_port()) for name in PROTOCOLS)
    props = {
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(broker.bundle(home / "broker-keystore.pem")),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(pki.ca_file),
        "listener.name.ssl.ssl.client.auth": "required",
        "sasl.enabled.mechanisms": ",".join(("PLAIN", *SCRAM)),
    }
    for listener in ("sasl_plaintext", "sasl_ssl"):
        props[f"listener.name.{listener}.plain.sasl.jaas.config"] = (
            "org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'user_{USER}="{PASSWORD}";')
        for mechanism in SCRAM:
            props[f"listener.name.{listener}.{mechanism.lower()}.sasl.jaas.config"] = (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;")
    users = tuple(f"{m}=[name={USER},password={PASSWORD}]" for m in SCRAM)
    return Security(listeners, tuple(props.items()), users)


@dataclass
class SecuredKafka:
    """The broker, its CA and a client certificate; settings for each listener."""

    broker: LocalBroker
    pki: Authority
    client: Issued
    home: Path

    def other_ca(self) -> Path:
        """The CA file of another authority (one that signed nothing of this broker's)."""
        return Authority(self.home / "other-ca", "another CA").ca_file

    def port(self, protocol: str) -> int:
        return next(x.port for x in self.broker.security.listeners if x.name == protocol)

    def settings(self, protocol: str, **overrides: Any) -> Settings:
        """Settings for a client of the ``protocol`` listener, right credentials (SCRAM-SHA-512
        for SASL), a fresh app id and data dir; ``overrides`` replace any of them."""
        values: dict[str, Any] = {
            "broker": f"127.0.0.1:{self.port(protocol)}",
            "kafka_security_protocol": protocol,
            "app_id": f"sec{os.getpid()}-{next(_app_ids)}",
            "partitions": 2,
        }
        if protocol in ("SSL", "SASL_SSL"):
            values["kafka_ca_file"] = str(self.pki.ca_file)
        if protocol == "SSL":
            values.update(kafka_cert_file=str(self.client.cert),
                          kafka_key_file=str(self.client.key))
        if protocol.startswith("SASL_"):
            values.update(kafka_sasl_mechanism="SCRAM-SHA-512", kafka_username=USER,
                          kafka_password=PASSWORD)
        values.update(overrides)
        values.setdefault("data_dir", self.home / "data" / values["app_id"])
        return self.broker.settings.override(**values)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredKafka]:
    """One broker with every secured listener for the module; stopped by its PID."""
    home = tmp_path_factory.mktemp("secured-kafka")
    pki = Authority(home / "pki")
    security = broker_security(pki, pki.issue("broker"), home / "pki")
    broker = LocalBroker(broker_settings(home / "kafka"), security)
    broker.start()
    try:
        yield SecuredKafka(broker, pki, pki.issue("client", server=False), home)
    finally:
        broker.stop()


__all__ = ["secured", "workers"]
