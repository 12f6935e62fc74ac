"""A real single-node Apache Kafka broker (KRaft, combined broker + controller) on 127.0.0.1.

The jars come from Maven Central through the POM in ``docker/kafka/pom.xml``; the broker runs
as ``java -cp 'libs/*' kafka.Kafka server.properties`` with its data, logs, properties and PID
file under ``Settings.kafka_dir``. Start and stop are idempotent, and the broker is only ever
stopped by the PID this module recorded (checked against the process's command line, so a
recycled PID is never signalled).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gswarm.config import PROJECT_ROOT, Settings
from gswarm.errors import BrokerError, MissingToolError, PortInUseError
from gswarm.ports import free_port, require_free

KAFKA_MAIN = "kafka.Kafka"
POM = PROJECT_ROOT / "docker" / "kafka" / "pom.xml"
LOG4J = PROJECT_ROOT / "docker" / "kafka" / "log4j.properties"

INSTALL_HINT = {
    "java": "install a JDK 17 or newer (Debian/Ubuntu: apt-get install openjdk-17-jdk-headless)",
    "mvn": "install Apache Maven (Debian/Ubuntu: apt-get install maven)",
}


@dataclass(frozen=True)
class Listener:
    """A client listener besides the plaintext one, on 127.0.0.1 (``name`` is also its
    security protocol: SSL, SASL_PLAINTEXT or SASL_SSL)."""

    name: str
    port: int


@dataclass(frozen=True)
class Security:
    """What a broker needs for secured listeners: more listeners, their properties
    (keystores, SASL mechanisms and JAAS configs) and SCRAM users to create when the
    storage is formatted (Kafka's ``--add-scram`` form: ``SCRAM-SHA-512=[name=u,password=p]``).
    The plaintext listener stays: it carries the broker's own traffic and its health checks."""

    listeners: tuple[Listener, ...] = ()
    properties: tuple[tuple[str, str], ...] = ()
    scram_users: tuple[str, ...] = ()


@dataclass(frozen=True)
class BrokerStatus:
    """What ``gswarm kafka status`` reports."""

    running: bool
    pid: int | None
    answering: bool
    bootstrap: str


def require_tool(name: str) -> str:
    """Path of ``name`` on PATH, or a :class:`MissingToolError` that says what to install."""
    path = shutil.which(name)
    if path is None:
        raise MissingToolError(f"`{name}` was not found on PATH: {INSTALL_HINT[name]}")
    return path


@dataclass(frozen=True)
class Node:
    """A broker's place in a local cluster: its KRaft node id, the controller quorum
    (``id@host:port,...``), the cluster id all nodes format with, and the replication the
    cluster gives topics (replication factor, ``min.insync.replicas``)."""

    node_id: int = 1
    voters: str | None = None  # None: this node alone
    cluster_id: str | None = None  # None: a fresh one at the first format
    replication: int = 1
    min_insync: int = 1


class LocalBroker:
    """Fetch, start, check and stop the project's local Kafka broker."""

    def __init__(self, settings: Settings, security: Security | None = None,
                 node: Node | None = None) -> None:
        self.settings = settings
        self.security = security or Security()
        self.node = node or Node()
        self.home = settings.kafka_dir
        self.libs = settings.kafka_libs
        self.data = self.home / "data"
        self.logs = self.home / "logs"
        self.properties = self.home / "server.properties"
        self.pidfile = self.home / "broker.pid"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.settings.kafka_port}"

    # -- jars ------------------------------------------------------------------------------

    def jars_present(self) -> bool:
        return any(self.libs.glob("kafka_2.13-*.jar")) and any(
            self.libs.glob("slf4j-reload4j-*.jar")
        )

    def fetch(self) -> None:
        """Resolve the broker's jars from Maven Central into ``kafka_libs`` (once)."""
        if self.jars_present():
            return
        mvn = require_tool("mvn")
        require_tool("java")
        self.libs.mkdir(parents=True, exist_ok=True)
        cmd = [
            mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
            f"-DoutputDirectory={self.libs}", "-DincludeScope=runtime",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0 or not self.jars_present():
            log = self._save_output("fetch.out", cmd, proc)
            raise BrokerError(
                f"fetching the Kafka jars with Maven failed ({_last_line(proc)}): see {log}; "
                "Maven needs to reach Maven Central (check the network or a proxy in "
                "~/.m2/settings.xml)")

    # -- process ---------------------------------------------------------------------------

    def pid(self) -> int | None:
        """PID of the running broker started from this folder, else ``None``."""
        try:
            pid = int(self.pidfile.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return None
        ours = KAFKA_MAIN.encode() in cmdline and str(self.properties).encode() in cmdline
        return pid if ours else None

    def write_properties(self) -> None:
        s, extra = self.settings, self.security.listeners
        listeners = "".join(f",{x.name}://127.0.0.1:{x.port}" for x in extra)
        protocols = "".join(f",{x.name}:{x.name}" for x in extra)
        node = self.node
        rf, isr = str(node.replication), str(node.min_insync)
        props = {
            "process.roles": "broker,controller",
            "node.id": str(node.node_id),
            "controller.quorum.voters": (
                node.voters or f"{node.node_id}@127.0.0.1:{s.kafka_controller_port}"),
            "listeners": (
                f"PLAINTEXT://127.0.0.1:{s.kafka_port},"
                f"CONTROLLER://127.0.0.1:{s.kafka_controller_port}{listeners}"
            ),
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{s.kafka_port}{listeners}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": (
                f"CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT{protocols}"),
            "log.dirs": str(self.data),
            "num.partitions": str(s.partitions),
            "default.replication.factor": rf,
            "min.insync.replicas": isr,
            "offsets.topic.replication.factor": rf,
            "offsets.topic.num.partitions": "8",
            "transaction.state.log.replication.factor": rf,
            "transaction.state.log.min.isr": isr,
            "transaction.state.log.num.partitions": "8",
            # Fast failure detection: workers may use session timeouts of 1-3 s.
            "group.min.session.timeout.ms": "1000",
            "group.initial.rebalance.delay.ms": "0",
            # Topics are declared in topics/ and applied on purpose, never by accident.
            "auto.create.topics.enable": "false",
            "num.network.threads": "2",
            "num.io.threads": "4",
            "log.cleaner.threads": "1",
            "log.retention.check.interval.ms": "60000",
            **dict(self.security.properties),
        }
        self.home.mkdir(parents=True, exist_ok=True)
        self.properties.write_text("".join(f"{k}={v}\n" for k, v in props.items()))

    def _java(self) -> list[str]:
        return [
            require_tool("java"),
            f"-Xmx{self.settings.kafka_heap}", "-Xms128m",
            "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true",
            f"-Dlog4j.configuration=file:{LOG4J}", f"-Dkafka.logs.dir={self.logs}",
            "-cp", f"{self.libs}/*",
        ]

    def format_storage(self) -> None:
        """Format the KRaft metadata log on first start (a fresh cluster id)."""
        if (self.data / "meta.properties").exists():
            return
        cluster_id = self.node.cluster_id or new_cluster_id()
        cmd = [
            *self._java(), "kafka.tools.StorageTool", "format",
            # "=" form: a random id may start with "-", which argparse takes for an option
            f"--cluster-id={cluster_id}", f"--config={self.properties}",
            *(f"--add-scram={user}" for user in self.security.scram_users),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            log = self._save_output("format.out", cmd, proc)
            raise BrokerError(f"formatting Kafka storage in {self.data} failed "
                              f"({_last_line(proc)}): see {log}")

    def _save_output(self, name: str, cmd: list[str], proc: subprocess.CompletedProcess[str]
                     ) -> Path:
        """Keep a failed tool's command line and output in the broker's logs folder."""
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / name
        log.write_text(" ".join(cmd) + "\n" + proc.stdout + proc.stderr)
        return log

    def start(self, timeout: float = 90.0) -> bool:
        """Start the broker unless it runs; wait until it answers. True if it was started."""
        proc = self.launch()
        self.wait(timeout, proc)
        return proc is not None

    def wait(self, timeout: float = 90.0, proc: subprocess.Popen[bytes] | None = None) -> None:
        """Wait until the broker answers (stopped, by its PID, if it does not)."""
        if proc is None:
            wait_until_answering(self.bootstrap, timeout)
            return
        try:
            wait_until_answering(self.bootstrap, timeout, proc=proc)
        except BrokerError as exc:
            self.stop()
            raise BrokerError(f"the local Kafka broker did not start ({exc}): see "
                              f"{self.logs / 'kafka.out'}") from None

    def launch(self) -> subprocess.Popen[bytes] | None:
        """Start the broker's process unless it runs, without waiting for it to answer (the
        nodes of a cluster answer once a quorum of them runs). None if it was running."""
        if self.pid() is not None:
            return None
        s = self.settings
        require_free("127.0.0.1", s.kafka_port, "the local Kafka broker", "GSWARM_KAFKA_PORT")
        require_free("127.0.0.1", s.kafka_controller_port, "the local Kafka broker's "
                     "controller", "GSWARM_KAFKA_CONTROLLER_PORT")
        for listener in self.security.listeners:
            require_free("127.0.0.1", listener.port, f"the local broker's {listener.name} "
                         "listener", "another port")
        self.fetch()
        self.write_properties()
        self.logs.mkdir(parents=True, exist_ok=True)
        self.format_storage()
        out = (self.logs / "kafka.out").open("ab")
        proc = subprocess.Popen(
            [*self._java(), KAFKA_MAIN, str(self.properties)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C in the caller's terminal must not kill it
        )
        out.close()
        self.pidfile.write_text(f"{proc.pid}\n")
        return proc

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the broker by its PID (SIGTERM, then SIGKILL). True if one was running."""
        pid = self.pid()
        if pid is None:
            self.pidfile.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        if not _wait_exit(pid, timeout):
            os.kill(pid, signal.SIGKILL)
            _wait_exit(pid, 10.0)
        self.pidfile.unlink(missing_ok=True)
        return True

    def kill(self) -> None:
        """SIGKILL the broker (tests of broker outages)."""
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            _wait_exit(pid, 10.0)

    def status(self) -> BrokerStatus:
        pid = self.pid()
        answering = pid is not None and answers(self.bootstrap, timeout=5.0)
        return BrokerStatus(pid is not None, pid, answering, self.bootstrap)

def new_cluster_id() -> str:
    """A fresh KRaft cluster id (what ``kafka-storage random-uuid`` prints)."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


class LocalCluster:
    """``size`` KRaft nodes (each broker and controller) from the same jars on loopback
    ports: replication factor ``min(3, size)``, ``min.insync.replicas`` one less (at
    least 1). Each node is a :class:`LocalBroker` under ``kafka_dir/cluster-<size>/node-<i>``,
    started and stopped by its own PID; the ports and the cluster id are kept in
    ``cluster.json`` there, so a cluster restarts as the same cluster. Node 0 listens on
    ``kafka_port``/``kafka_controller_port``, the others on ports free at the first start.
    """

    def __init__(self, settings: Settings, size: int = 3) -> None:
        if size < 1:
            raise BrokerError(f"a cluster needs at least one broker, not {size}")
        self.settings = settings
        self.size = size
        self.home = settings.kafka_dir / f"cluster-{size}"
        self.state = self.home / "cluster.json"
        self.nodes = self._nodes()

    def _layout(self) -> dict[str, Any]:
        try:
            layout: dict[str, Any] = json.loads(self.state.read_text())
            return layout
        except (FileNotFoundError, ValueError):
            pass
        s = self.settings
        ports = [(s.kafka_port, s.kafka_controller_port)] + [
            (free_port(), free_port()) for _ in range(self.size - 1)]
        layout = {"cluster_id": new_cluster_id(), "ports": ports}
        self.home.mkdir(parents=True, exist_ok=True)
        self.state.write_text(json.dumps(layout))
        return layout

    def _nodes(self) -> list[LocalBroker]:
        layout = self._layout()
        ports = [tuple(p) for p in layout["ports"]]
        voters = ",".join(f"{i + 1}@127.0.0.1:{c}" for i, (_, c) in enumerate(ports))
        replication = min(3, self.size)
        nodes = []
        for i, (port, controller) in enumerate(ports):
            node_settings = self.settings.override(
                kafka_dir=self.home / f"node-{i}", kafka_port=port,
                kafka_controller_port=controller, broker=f"127.0.0.1:{port}")
            nodes.append(LocalBroker(node_settings, node=Node(
                i + 1, voters, layout["cluster_id"], replication, max(1, replication - 1))))
        return nodes

    @property
    def bootstrap(self) -> str:
        return ",".join(node.bootstrap for node in self.nodes)

    @property
    def replication(self) -> int:
        return self.nodes[0].node.replication

    def client_settings(self) -> Settings:
        """The settings, with the whole cluster as bootstrap and topics replicated on it."""
        return self.settings.override(broker=self.bootstrap, replication=self.replication)

    def start(self, timeout: float = 120.0) -> bool:
        """Start every node that does not run; wait until all answer. True if any started."""
        if self.nodes:
            self.nodes[0].fetch()
        for node in self.nodes:
            if node.pid() is None:
                _await_free(node.settings, 30.0)
        procs = [node.launch() for node in self.nodes]
        for node, proc in zip(self.nodes, procs, strict=True):
            node.wait(timeout, proc)
        return any(proc is not None for proc in procs)

    def start_node(self, index: int, timeout: float = 120.0) -> bool:
        """Start one node (after :meth:`kill_node`); wait until it answers."""
        if self.nodes[index].pid() is None:
            _await_free(self.nodes[index].settings, 30.0)
        return self.nodes[index].start(timeout)

    def kill_node(self, index: int) -> int | None:
        """SIGKILL one node by its PID (chaos); returns the PID, None if it was not running."""
        pid = self.nodes[index].pid()
        self.nodes[index].kill()
        return pid

    def pids(self) -> list[int | None]:
        return [node.pid() for node in self.nodes]

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop every node by its PID. True if any was running."""
        return any([node.stop(timeout) for node in self.nodes])

    def status(self) -> list[BrokerStatus]:
        return [node.status() for node in self.nodes]


def local_clusters(settings: Settings) -> list[LocalCluster]:
    """The local clusters started under ``kafka_dir`` (running or not)."""
    found = []
    for state in sorted(settings.kafka_dir.glob("cluster-*/cluster.json")):
        size = state.parent.name.removeprefix("cluster-")
        if size.isdigit():
            found.append(LocalCluster(settings, int(size)))
    return found


def _await_free(settings: Settings, timeout: float) -> None:
    """Wait (up to ``timeout`` s) until a node's ports can be listened on again: a node
    just stopped can leave its port held for a moment by connections it closed."""
    deadline = time.monotonic() + timeout
    for port in (settings.kafka_port, settings.kafka_controller_port):
        while True:
            try:
                require_free("127.0.0.1", port, "a local cluster node", "GSWARM_KAFKA_PORT")
                break
            except PortInUseError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)


def _last_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The last line a failed tool printed (its exit status if it printed nothing)."""
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    return lines[-1].strip() if lines else f"exit status {proc.returncode}"


def _wait_exit(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            # Reap it if it is our child; otherwise just probe it.
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done == pid:
                return True
        except ChildProcessError:
            pass
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        if _is_zombie(pid):
            return True
        time.sleep(0.1)
    return False


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


async def _metadata(bootstrap: str, timeout: float) -> bool:
    from aiokafka.admin import AIOKafkaAdminClient

    client = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000)
    )
    try:
        await asyncio.wait_for(client.start(), timeout)
        info = await asyncio.wait_for(client.describe_cluster(), timeout)
        return bool(info.get("brokers"))
    except Exception:
        return False
    finally:
        await client.close()


def answers(bootstrap: str, timeout: float = 5.0) -> bool:
    """True if a broker at ``bootstrap`` answers a metadata request."""
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    try:  # a cheap probe first, so a closed port does not make aiokafka log errors
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError:
        return False
    return asyncio.run(_metadata(bootstrap, timeout))


def wait_until_answering(
    bootstrap: str, timeout: float, proc: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BrokerError(f"the broker exited with status {proc.returncode}")
        if answers(bootstrap, timeout=3.0):
            return
        time.sleep(0.3)
    raise BrokerError(f"no broker answered on {bootstrap} within {timeout:.0f}s")
