"""How Gswarm's Kafka clients authenticate: the one mapping from settings to client options.

Every client takes its security options from here: :func:`client_kwargs` for aiokafka's
producers, consumers and admin clients, :func:`faust_credentials` for Faust's
``broker_credentials`` (the workers), :func:`kcat_config` for librdkafka's ``kcat``. When a
client cannot connect, aiokafka only logs why; :func:`diagnose` connects once more and
turns a refused password or an untrusted certificate into an error that says so.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

from gswarm.config import Settings
from gswarm.errors import ConfigError, KafkaAuthError

TLS_PROTOCOLS = ("SSL", "SASL_SSL")


def uses_tls(settings: Settings) -> bool:
    return settings.kafka_security_protocol in TLS_PROTOCOLS


def uses_sasl(settings: Settings) -> bool:
    return settings.kafka_security_protocol.startswith("SASL_")


def password(settings: Settings) -> str:
    """The SASL password: GSWARM_KAFKA_PASSWORD, or the first line of its file."""
    if not settings.kafka_password_file:
        return settings.kafka_password
    path = Path(settings.kafka_password_file).expanduser()
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise ConfigError(f"GSWARM_KAFKA_PASSWORD_FILE={str(path)!r} cannot be read "
                          f"({exc.strerror or exc}): fix the path or its permissions") from None
    return lines[0] if lines else ""


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of SSL and SASL_SSL (brokers verified, hostnames checked), else None."""
    if not uses_tls(settings):
        return None
    return tls_client_context(settings.kafka_ca_file, settings.kafka_cert_file,
                              settings.kafka_key_file, "GSWARM_KAFKA")


def tls_client_context(ca_file: str, cert_file: str = "", key_file: str = "",
                       prefix: str = "GSWARM_KAFKA") -> ssl.SSLContext:
    """A client context trusting ``ca_file`` (or the system's CAs), with a client
    certificate if one is given; a file that cannot be loaded names its setting."""
    try:
        context = ssl.create_default_context(cafile=ca_file or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{prefix}_CA_FILE={ca_file!r} is not a readable PEM file of CA "
                          f"certificates ({exc}): fix or unset it") from None
    if cert_file:
        try:
            context.load_cert_chain(cert_file, key_file or None)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"{prefix}_CERT_FILE={cert_file!r} / {prefix}_KEY_FILE="
                              f"{key_file!r} are not a readable PEM certificate and its key "
                              f"({exc}): fix or unset them") from None
    return context


def client_kwargs(settings: Settings) -> dict[str, Any]:
    """aiokafka options for ``settings``' broker: bootstrap servers and security."""
    return {"bootstrap_servers": settings.broker, **options(settings)}


def options(settings: Settings) -> dict[str, Any]:
    """aiokafka's security options for ``settings`` (for clients given their servers)."""
    kwargs: dict[str, Any] = {"security_protocol": settings.kafka_security_protocol}
    context = ssl_context(settings)
    if context is not None:
        kwargs["ssl_context"] = context
    if uses_sasl(settings):
        kwargs.update(sasl_mechanism=settings.kafka_sasl_mechanism,
                      sasl_plain_username=settings.kafka_username,
                      sasl_plain_password=password(settings))
    return kwargs


def faust_credentials(settings: Settings) -> Any:
    """Faust's ``broker_credentials`` for ``settings`` (``None`` for PLAINTEXT)."""
    import faust

    context = ssl_context(settings)
    if uses_sasl(settings):
        return faust.SASLCredentials(
            username=settings.kafka_username, password=password(settings),
            ssl_context=context, mechanism=settings.kafka_sasl_mechanism)
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def kcat_config(settings: Settings) -> dict[str, str]:
    """librdkafka properties (``kcat -F FILE``; a file, so no password on a command line)."""
    conf = {"bootstrap.servers": settings.broker,
            "security.protocol": settings.kafka_security_protocol.lower()}
    if uses_tls(settings):
        if settings.kafka_ca_file:
            conf["ssl.ca.location"] = settings.kafka_ca_file
        if settings.kafka_cert_file:
            conf["ssl.certificate.location"] = settings.kafka_cert_file
            conf["ssl.key.location"] = settings.kafka_key_file
    if uses_sasl(settings):
        conf.update({"sasl.mechanisms": settings.kafka_sasl_mechanism,
                     "sasl.username": settings.kafka_username,
                     "sasl.password": password(settings)})
    return conf


def diagnose(settings: Settings, timeout_s: float = 10.0) -> KafkaAuthError | None:
    """Why a secured client could not connect, if security is the reason: one connection
    to the first bootstrap server, as the clients make it. ``None`` for anything else."""
    if settings.kafka_security_protocol == "PLAINTEXT":
        return None
    try:
        return asyncio.run(asyncio.wait_for(_probe(settings), timeout_s))
    except (TimeoutError, OSError):
        return None


async def _probe(settings: Settings) -> KafkaAuthError | None:
    from aiokafka.conn import create_conn
    from aiokafka.errors import AuthenticationFailedError, KafkaError, SaslAuthenticationFailed

    host, _, port = settings.broker.split(",")[0].strip().rpartition(":")
    where, protocol = f"Kafka at {host}:{port}", settings.kafka_security_protocol
    try:
        conn = await create_conn(host, int(port), **options(settings))
    except ssl.SSLCertVerificationError as exc:
        return KafkaAuthError(
            f"the TLS certificate of {where} is not trusted ({exc.verify_message}): set "
            "GSWARM_KAFKA_CA_FILE to the PEM file of the CA that signed it")
    except ssl.SSLError as exc:
        return KafkaAuthError(
            f"the TLS handshake with {where} failed ({exc.reason or exc}): check "
            "GSWARM_KAFKA_SECURITY_PROTOCOL and, if the broker asks for a client "
            "certificate, GSWARM_KAFKA_CERT_FILE and GSWARM_KAFKA_KEY_FILE")
    except (SaslAuthenticationFailed, AuthenticationFailedError) as exc:
        return KafkaAuthError(
            f"{where} refused SASL {settings.kafka_sasl_mechanism} user "
            f"{settings.kafka_username!r} ({type(exc).__name__}): check "
            "GSWARM_KAFKA_USERNAME, GSWARM_KAFKA_PASSWORD (or GSWARM_KAFKA_PASSWORD_FILE) and "
            "GSWARM_KAFKA_SASL_MECHANISM")
    except (KafkaError, ConnectionResetError) as exc:  # it listens, then hangs up
        return KafkaAuthError(
            f"{where} closed the connection while Gswarm set up {protocol} "
            f"({type(exc).__name__}): check that GSWARM_KAFKA_SECURITY_PROTOCOL (and "
            "GSWARM_KAFKA_SASL_MECHANISM) are what this listener expects and, if it requires "
            "client certificates, GSWARM_KAFKA_CERT_FILE and GSWARM_KAFKA_KEY_FILE")
    conn.close()
    return None
