"""Gswarm settings: the only module that reads the environment.

Every setting is a field of :class:`Settings` with its environment variable, default and
meaning next to it. ``Settings.from_env()`` builds one from ``os.environ``; CLI flags override
single fields with ``dataclasses.replace``. The README's configuration table is generated
from :func:`describe` (``gswarm config``), so the two cannot disagree.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gswarm.errors import ConfigError

#: The repository root (the folder holding ``pyproject.toml``) in a source checkout.
PROJECT_ROOT = Path(__file__).resolve().parent.parent


#: Settings that were removed, and what replaced them (set, they fail with this message).
RETIRED = {
    "GSWARM_BATCH_MAX": "batches are runs of messages now; see GSWARM_BATCH_RUNS and "
                        "GSWARM_FETCH_PARTITION_BYTES",
}


def _setting(env: str, default: Any, doc: str, *, secret: bool = False,
             path: bool = False) -> Any:
    """A field with its environment variable and meaning; a ``secret`` one is never shown
    (not in ``repr``, masked by ``gswarm config --current``). A ``path`` one is a file
    path kept as text: set empty it is empty (off), a relative one is made absolute."""
    return field(default=default, repr=not secret,
                 metadata={"env": env, "doc": doc, "secret": secret, "path": path})


#: Kafka security protocols (Kafka's ``security.protocol``) and SASL mechanisms supported.
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


@dataclass(frozen=True)
class Settings:
    """Typed, documented configuration of a Gswarm process."""

    app_id: str = _setting(
        "GSWARM_APP_ID", "gswarm",
        "Faust app id: consumer group, prefix of every topic name and of changelog topics.",
    )
    broker: str = _setting(
        "GSWARM_BROKER", "127.0.0.1:9092",
        "Kafka bootstrap servers (host:port, comma separated).",
    )
    kafka_security_protocol: str = _setting(
        "GSWARM_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT",
        "How every Kafka client of Gswarm (workers, feeds, commands, bench) connects: "
        "PLAINTEXT, SSL (TLS), SASL_PLAINTEXT or SASL_SSL (SASL over TLS, what managed Kafka "
        "services ask for).",
    )
    kafka_sasl_mechanism: str = _setting(
        "GSWARM_KAFKA_SASL_MECHANISM", "PLAIN",
        "SASL mechanism (with SASL_*): PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.",
    )
    kafka_username: str = _setting(
        "GSWARM_KAFKA_USERNAME", "", "SASL user name (with SASL_*).",
    )
    kafka_password: str = _setting(
        "GSWARM_KAFKA_PASSWORD", "",
        "SASL password (with SASL_*); never printed. Or use GSWARM_KAFKA_PASSWORD_FILE.",
        secret=True,
    )
    kafka_password_file: str = _setting(
        "GSWARM_KAFKA_PASSWORD_FILE", "",
        "File holding the SASL password (its first line), instead of GSWARM_KAFKA_PASSWORD.",
    )
    kafka_ca_file: str = _setting(
        "GSWARM_KAFKA_CA_FILE", "",
        "PEM file of the CA(s) that sign the brokers' certificates (with SSL, SASL_SSL); "
        "empty: the system's CAs.",
    )
    kafka_cert_file: str = _setting(
        "GSWARM_KAFKA_CERT_FILE", "",
        "PEM client certificate (chain), for brokers that require one (mutual TLS).",
    )
    kafka_key_file: str = _setting(
        "GSWARM_KAFKA_KEY_FILE", "",
        "PEM private key of the client certificate (unencrypted; keep it readable only by "
        "you).",
    )
    kafka_timeout_s: float = _setting(
        "GSWARM_KAFKA_TIMEOUT_S", 30.0,
        "Commands' own Kafka clients (feeds, topics, cursors; not the workers): seconds to "
        "wait for the broker to connect, answer or acknowledge before failing.",
    )
    partitions: int = _setting(
        "GSWARM_PARTITIONS", 8,
        "Partitions of the tick topic (and so of every table): the number of shards.",
    )
    replication: int = _setting(
        "GSWARM_REPLICATION", 1,
        "Replication factor of Gswarm's topics and of Faust's changelog topics.",
    )
    data_dir: Path = _setting(
        "GSWARM_DATA_DIR", PROJECT_ROOT / ".gswarm" / "data",
        "Worker state (RocksDB tables); `faust --datadir` overrides it; gswarm's own "
        "commands give each worker a sub-folder.",
    )
    web_host: str = _setting(
        "GSWARM_WEB_HOST", "127.0.0.1", "Address the worker's web server binds.",
    )
    web_port: int = _setting("GSWARM_WEB_PORT", 6066, "Port of the worker's web server.")
    api_token: str = _setting(
        "GSWARM_API_TOKEN", "",
        "Bearer token the web API requires on every route but /api/health and the dashboard's "
        "page and assets (required when GSWARM_WEB_HOST is not loopback); workers and "
        "`gswarm query` send it. Never printed.",
        secret=True,
    )
    web_cert_file: str = _setting(
        "GSWARM_WEB_CERT_FILE", "",
        "PEM certificate (chain) of the worker's web server: set with GSWARM_WEB_KEY_FILE, "
        "it serves HTTPS.",
    )
    web_key_file: str = _setting(
        "GSWARM_WEB_KEY_FILE", "", "PEM private key of GSWARM_WEB_CERT_FILE.",
    )
    web_ca_file: str = _setting(
        "GSWARM_WEB_CA_FILE", "",
        "PEM file of the CA that signs the workers' web certificates, trusted by workers "
        "(routing between them) and `gswarm query`; empty: the system's CAs.",
    )
    query_timeout_s: float = _setting(
        "GSWARM_QUERY_TIMEOUT_S", 30.0,
        "`gswarm query`: seconds to wait for the worker's answer before failing.",
    )
    lean: bool = _setting(
        "GSWARM_LEAN", True,
        "Lean mode: one worker owns every partition, small RocksDB caches, no standbys.",
    )
    retention_s: float = _setting(
        "GSWARM_RETENTION_S", 3600.0,
        "Sliding window of fact history kept, in seconds of event time.",
    )
    prune_interval_s: float = _setting(
        "GSWARM_PRUNE_INTERVAL_S", 30.0, "How often the pruner runs, in seconds.",
    )
    batch_runs: int = _setting(
        "GSWARM_BATCH_RUNS", 0,
        "Ingest batch: at most this many runs (a run: one partition's messages from one "
        "fetch); 0 means one per partition. Flushed sooner after GSWARM_BATCH_WITHIN_S.",
    )
    fetch_partition_bytes: int = _setting(
        "GSWARM_FETCH_PARTITION_BYTES", 1_048_576,
        "Largest fetch per partition in bytes, so the largest run: under a backlog a batch "
        "holds up to GSWARM_BATCH_RUNS runs of about this size; under light load it is small.",
    )
    fetch_wait_ms: int = _setting(
        "GSWARM_FETCH_WAIT_MS", 25,
        "Longest the broker holds a worker's fetch while no new records arrive (ms). Low "
        "keeps produce -> queryable latency low (Faust's fixed 1500 ms held busy partitions "
        "back); higher means fewer empty fetches on an idle cluster.",
    )
    batch_within_s: float = _setting(
        "GSWARM_BATCH_WITHIN_S", 0.02,
        "Ingest batch: flush after this many seconds (or at GSWARM_BATCH_RUNS runs).",
    )
    rocksdb_memory_mb: int = _setting(
        "GSWARM_ROCKSDB_MEMORY_MB", 64,
        "RocksDB memory of a worker: one block cache shared by every table partition's "
        "database, with their write buffers (up to half) charged to it.",
    )
    memory_trim_s: float = _setting(
        "GSWARM_MEMORY_TRIM_S", 5.0,
        "How often a worker gives the free memory of its heap back to the OS (glibc's "
        "malloc_trim, from a thread), so RSS follows what it holds rather than the "
        "high-water mark of its largest batches. 0 turns it off; a no-op without glibc.",
    )
    commit_interval_s: float = _setting(
        "GSWARM_COMMIT_INTERVAL_S", 1.0,
        "How often a worker commits consumed offsets (redelivery after a crash is bounded "
        "by it; state stays exact either way).",
    )
    session_timeout_s: float = _setting(
        "GSWARM_SESSION_TIMEOUT_S", 6.0,
        "How long the group waits on a silent worker before giving its partitions to the "
        "others (Kafka's session timeout, bounded below by the broker's "
        "group.min.session.timeout.ms, 6 s by default). A worker whose process died is "
        "evicted at once, without waiting for it: by its supervisor, or by a peer whose "
        "probe it refuses (GSWARM_PEER_PROBE_S); only a silent one waits for this.",
    )
    heartbeat_s: float = _setting(
        "GSWARM_HEARTBEAT_S", 0.1,
        "How often a worker heartbeats to its group, which is also how soon it notices that "
        "a rebalance began; at most a third of GSWARM_SESSION_TIMEOUT_S.",
    )
    peer_probe_s: float = _setting(
        "GSWARM_PEER_PROBE_S", 0.2,
        "How often a worker checks that its peers' web ports still accept connections; a "
        "peer that refuses twice in a row died, and is evicted from the group at once "
        "instead of after GSWARM_SESSION_TIMEOUT_S. 0 turns the check off.",
    )
    max_message_bytes: int = _setting(
        "GSWARM_MAX_MESSAGE_BYTES", 1_048_576,
        "Largest tick message accepted; larger ones are dead-lettered as oversized.",
    )
    signals_rules: str = _setting(
        "GSWARM_SIGNALS_RULES", str(PROJECT_ROOT / "signals" / "rules.toml"),
        "Signal rules (TOML, see signals/rules.toml) the workers evaluate on every tick; "
        "signals go to the <app id>-signals topic. Empty: no signals. A bad file stops the "
        "worker at start (`gswarm signals check FILE`).",
        path=True,
    )
    kafka_dir: Path = _setting(
        "GSWARM_KAFKA_DIR", PROJECT_ROOT / ".gswarm" / "kafka",
        "Local broker: its data, logs, properties and PID file.",
    )
    kafka_libs: Path = _setting(
        "GSWARM_KAFKA_LIBS", PROJECT_ROOT / ".gswarm" / "kafka-libs",
        "Local broker: the Kafka jars fetched by Maven.",
    )
    kafka_port: int = _setting(
        "GSWARM_KAFKA_PORT", 9092, "Local broker: client listener port on 127.0.0.1.",
    )
    kafka_controller_port: int = _setting(
        "GSWARM_KAFKA_CONTROLLER_PORT", 9093,
        "Local broker: KRaft controller listener port on 127.0.0.1.",
    )
    kafka_heap: str = _setting(
        "GSWARM_KAFKA_HEAP", "512m", "Local broker: JVM heap cap (-Xmx).",
    )
    manifold_api: str = _setting(
        "GSWARM_MANIFOLD_API", "https://api.manifold.markets",
        "Manifold feed: base URL of the REST API (`/v0/bets`, `/v0/market/{id}`...).",
    )
    manifold_ws: str = _setting(
        "GSWARM_MANIFOLD_WS", "wss://api.manifold.markets/ws",
        "Manifold feed: URL of the websocket (new bets are pushed on it).",
    )
    manifold_rpm: float = _setting(
        "GSWARM_MANIFOLD_RPM", 450.0,
        "Manifold feed: REST requests per minute (the documented limit is 500 per IP).",
    )
    polymarket_api: str = _setting(
        "GSWARM_POLYMARKET_API", "https://data-api.polymarket.com",
        "Polymarket feed: base URL of the public data API (`/trades`).",
    )
    polymarket_rpm: float = _setting(
        "GSWARM_POLYMARKET_RPM", 300.0,
        "Polymarket feed: requests per minute (the documented `/trades` limit is 200 per 10 s).",
    )
    feed_poll_s: float = _setting(
        "GSWARM_FEED_POLL_S", 5.0,
        "Polymarket feed: seconds between polls of the newest trades.",
    )
    feed_ping_s: float = _setting(
        "GSWARM_FEED_PING_S", 20.0,
        "Manifold feed: websocket ping interval in seconds (at most 30; the server drops "
        "a connection silent for 60 s).",
    )
    feed_backfill_s: float = _setting(
        "GSWARM_FEED_BACKFILL_S", 3600.0,
        "Live feeds: history fetched through REST by a feed that has no cursor yet, in s.",
    )
    feed_window_s: float = _setting(
        "GSWARM_FEED_WINDOW_S", 120.0,
        "Live feeds: how late (event time, s) an item may arrive and still be delivered; "
        "a resumed feed re-reads this much and drops the ids it already delivered.",
    )
    feed_meta_refresh_s: float = _setting(
        "GSWARM_FEED_META_REFRESH_S", 300.0,
        "Live feeds: seconds between refreshes of market metadata (resolved markets stop).",
    )
    feed_retry_s: float = _setting(
        "GSWARM_FEED_RETRY_S", 1.0,
        "Live feeds: base of the jittered exponential back-off for reconnects and retries "
        "(capped at 60 s).",
    )
    log_level: str = _setting(
        "GSWARM_LOG_LEVEL", "info",
        "Log level of Gswarm processes: crit, error, warn, info or debug (Faust's names).",
    )
    traceback: bool = _setting(
        "GSWARM_TRACEBACK", False,
        "Commands: after a failure's one-line message, print the Python traceback too (for "
        "bug reports).",
    )
    fault_produce_delay_ms: int = _setting(
        "GSWARM_FAULT_PRODUCE_DELAY_MS", 0,
        "Fault injection, for tests only: a worker holds each produced message this long "
        "before handing it to Kafka (a slow producer). 0: off.",
    )
    fault_kill_after_commit: bool = _setting(
        "GSWARM_FAULT_KILL_AFTER_COMMIT", False,
        "Fault injection, for tests only: a worker kills itself (SIGKILL) right after its "
        "first offset commit that moved an offset.",
    )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``env`` (default ``os.environ``); unknown values fail clearly."""
        env = os.environ if env is None else env
        for old, new in RETIRED.items():
            if env.get(old):
                raise ConfigError(f"{old} is no longer a setting: {new}")
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(f.metadata["env"])
            if raw is not None and f.metadata["path"]:
                values[f.name] = str(Path(raw).expanduser().resolve()) if raw else ""
            elif raw is not None and raw != "":
                values[f.name] = _parse(f.metadata["env"], raw, type(f.default))
        # `faust ... --datadir DIR worker` passes DIR to the app this way: it wins, as a
        # Faust user expects.
        faust_datadir = env.get("F_DATADIR") or env.get("FAUST_DATADIR")
        if faust_datadir:
            values["data_dir"] = _parse("F_DATADIR", faust_datadir, Path)
        return cls(**values).validated()

    def override(self, **changes: Any) -> Settings:
        """Return a copy with the non-``None`` ``changes`` applied (CLI flags)."""
        given = {k: v for k, v in changes.items() if v is not None}
        return dataclasses.replace(self, **given).validated() if given else self

    def validated(self) -> Settings:
        """Check ranges; raise :class:`ConfigError` naming the variable on a bad value."""
        port = "a port number, 1 to 65535"
        checks = [
            ("kafka_timeout_s", self.kafka_timeout_s > 0, "> 0"),
            ("partitions", self.partitions >= 1, ">= 1"),
            ("replication", self.replication >= 1, ">= 1"),
            ("batch_runs", self.batch_runs >= 0, ">= 0"),
            ("fetch_partition_bytes", self.fetch_partition_bytes >= 1024, ">= 1024"),
            ("fetch_wait_ms", 1 <= self.fetch_wait_ms <= 30_000, "in [1, 30000]"),
            ("batch_within_s", self.batch_within_s > 0, "> 0"),
            ("rocksdb_memory_mb", self.rocksdb_memory_mb >= 8, ">= 8"),
            ("memory_trim_s", self.memory_trim_s >= 0, ">= 0"),
            ("commit_interval_s", self.commit_interval_s > 0, "> 0"),
            ("session_timeout_s", self.session_timeout_s >= 1, ">= 1"),
            ("peer_probe_s", self.peer_probe_s >= 0, ">= 0"),
            ("heartbeat_s", 0 < self.heartbeat_s <= self.session_timeout_s / 3,
             "> 0 and at most a third of GSWARM_SESSION_TIMEOUT_S"),
            ("retention_s", self.retention_s > 0, "> 0"),
            ("prune_interval_s", self.prune_interval_s > 0, "> 0"),
            ("web_port", 0 < self.web_port < 65536, port),
            ("query_timeout_s", self.query_timeout_s > 0, "> 0"),
            ("kafka_port", 0 < self.kafka_port < 65536, port),
            ("kafka_controller_port", 0 < self.kafka_controller_port < 65536, port),
            ("max_message_bytes", self.max_message_bytes >= 1024, ">= 1024"),
            ("log_level", self.log_level in LOG_LEVELS, "one of " + ", ".join(LOG_LEVELS)),
            ("kafka_security_protocol", self.kafka_security_protocol in SECURITY_PROTOCOLS,
             "one of " + ", ".join(SECURITY_PROTOCOLS)),
            ("kafka_sasl_mechanism", self.kafka_sasl_mechanism in SASL_MECHANISMS,
             "one of " + ", ".join(SASL_MECHANISMS)),
            ("manifold_rpm", self.manifold_rpm > 0, "> 0"),
            ("polymarket_rpm", self.polymarket_rpm > 0, "> 0"),
            ("feed_poll_s", self.feed_poll_s > 0, "> 0"),
            ("feed_ping_s", 0 < self.feed_ping_s <= 30, "> 0 and <= 30"),
            ("feed_backfill_s", self.feed_backfill_s >= 0, ">= 0"),
            ("feed_window_s", self.feed_window_s >= 0, ">= 0"),
            ("feed_meta_refresh_s", self.feed_meta_refresh_s > 0, "> 0"),
            ("feed_retry_s", self.feed_retry_s > 0, "> 0"),
        ]
        for name, ok, rule in checks:
            if not ok:  # NaN fails every comparison, so it lands here too
                env = _field(name).metadata["env"]
                raise ConfigError(f"{env}={getattr(self, name)!r} is out of range: it must "
                                  f"be {rule}")
        self._check_pairs()
        return self

    def _check_pairs(self) -> None:
        """Settings that only make sense together."""
        if not self.api_token and not is_loopback(self.web_host):
            raise ConfigError(f"GSWARM_WEB_HOST={self.web_host} is not a loopback address, so "
                              "the web API would be open to anyone who can reach it: set "
                              "GSWARM_API_TOKEN to a long random secret (every worker of the "
                              "cluster the same), or bind 127.0.0.1")
        if self.kafka_password and self.kafka_password_file:
            raise ConfigError("GSWARM_KAFKA_PASSWORD and GSWARM_KAFKA_PASSWORD_FILE are both "
                              "set: keep one")
        if self.kafka_security_protocol.startswith("SASL_") and not self.kafka_username:
            raise ConfigError(f"GSWARM_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol}"
                              " needs GSWARM_KAFKA_USERNAME and GSWARM_KAFKA_PASSWORD (or "
                              "GSWARM_KAFKA_PASSWORD_FILE)")
        for cert, key, what in (("kafka_cert_file", "kafka_key_file", "GSWARM_KAFKA"),
                                ("web_cert_file", "web_key_file", "GSWARM_WEB")):
            if bool(getattr(self, cert)) != bool(getattr(self, key)):
                raise ConfigError(f"{what}_CERT_FILE and {what}_KEY_FILE go together: set "
                                  "both or neither")

    @property
    def web_tls(self) -> bool:
        """The worker's web server serves HTTPS."""
        return bool(self.web_cert_file)

    def to_env(self) -> dict[str, str]:
        """These settings as environment variables, for child processes (workers)."""
        env = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            env[f.metadata["env"]] = ("1" if value else "0") if isinstance(value, bool) else str(
                value
            )
        return env

    @property
    def batch_runs_or_partitions(self) -> int:
        """Runs per ingest batch: ``batch_runs``, or one per partition when it is 0."""
        return self.batch_runs or self.partitions

    @property
    def tick_topic(self) -> str:
        return f"{self.app_id}-ticks"

    @property
    def deadletter_topic(self) -> str:
        return f"{self.app_id}-deadletters"

    @property
    def signals_rules_path(self) -> Path | None:
        """The rules file, or None when signals are off."""
        return Path(self.signals_rules) if self.signals_rules else None

    @property
    def signals_topic(self) -> str:
        return f"{self.app_id}-signals"

    @property
    def cursor_topic(self) -> str:
        return f"{self.app_id}-feed-cursors"

    @property
    def web_url(self) -> str:
        return f"{'https' if self.web_tls else 'http'}://{self.web_host}:{self.web_port}"

    def shown(self) -> list[tuple[str, str]]:
        """(environment variable, value) of every setting, secrets masked: what
        ``gswarm config --current`` prints."""
        rows, env = [], self.to_env()
        for f in dataclasses.fields(self):
            value = env[f.metadata["env"]]
            if f.metadata["secret"] and value:
                value = "***"
            rows.append((f.metadata["env"], value))
        return rows


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


#: The log levels ``faust worker --loglevel`` accepts.
LOG_LEVELS = ("crit", "error", "warn", "info", "debug")


def _field(name: str) -> dataclasses.Field[Any]:
    return next(f for f in dataclasses.fields(Settings) if f.name == name)


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


_KINDS = {bool: "one of 1/0, true/false, yes/no, on/off", int: "a whole number",
          float: "a number"}


def _parse(env: str, raw: str, typ: type[Any]) -> Any:
    try:
        if typ is bool:
            low = raw.strip().lower()
            if low not in _TRUE | _FALSE:
                raise ValueError(raw)
            return low in _TRUE
        if issubclass(typ, Path):
            return Path(raw).expanduser().resolve()
        return typ(raw)
    except ValueError as exc:
        kind = _KINDS.get(typ, f"a {typ.__name__}")
        raise ConfigError(f"{env}={raw!r} is not {kind}: fix or unset it") from exc


def describe() -> list[tuple[str, str, str]]:
    """(environment variable, default, meaning) for every setting, in declaration order."""
    rows = []
    for f in dataclasses.fields(Settings):
        default = f.default
        if isinstance(default, Path):
            default = "./" + str(default.relative_to(PROJECT_ROOT))
        elif isinstance(default, str) and f.metadata["path"] and default.startswith(
                str(PROJECT_ROOT)):
            default = "./" + str(Path(default).relative_to(PROJECT_ROOT))
        elif isinstance(default, bool):
            default = "1" if default else "0"
        rows.append((f.metadata["env"], str(default), f.metadata["doc"]))
    return rows


def markdown_row(env: str, default: str, doc: str) -> str:
    """One row of the settings table (``gswarm config``, the README): an empty default is
    an empty cell."""
    shown = f"`{default}`" if default else ""
    return f"| `{env}` | {shown} | {doc} |"
