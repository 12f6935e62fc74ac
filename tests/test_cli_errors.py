"""Every command, against each failure it can meet, says one line and exits non-zero.

Each row runs the `gswarm` console script in its own process (stopped by its PID) and
checks that stderr is exactly one line, ``gswarm: error: ...``, holding the words that
name what failed and what to do, and the exit status. "No broker" is a free loopback port
nothing listens on; the broker that goes away mid-run is one of this module's own, killed
by its PID; topics come from the session broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from gswarm import cluster
from gswarm.config import Settings
from gswarm.kafka import topics
from gswarm.kafka.broker import LocalBroker
from gswarm.ports import free_port
from tests.conftest import broker_settings
from tests.feeds.fake_apis import (
    BetMaker,
    FakeManifold,
    FakePolymarket,
    LocalServer,
    TradeMaker,
)
from tests.feeds.test_live_e2e import ServerThread

pytestmark = pytest.mark.timeout(180)

GSWARM = Path(sys.executable).parent / "gswarm"
TIMEOUT_S = 3  # GSWARM_KAFKA_TIMEOUT_S of every row: a stalled broker fails fast
NO_BROKER = ["no kafka broker answers", "gswarm kafka up", "GSWARM_BROKER"]
NO_WORKER = ["no worker answers", "--web-port"]
SILENT_WORKER = ["did not answer within 1 s", "GSWARM_QUERY_TIMEOUT_S"]
MISSING_TOPIC = ["-ticks does not exist", "gswarm topics apply"]
WRONG_PARTITIONS = ["-ticks has 4 partitions", "--partitions 4"]
GONE = ["stopped answering", f"{TIMEOUT_S} s", "GSWARM_KAFKA_TIMEOUT_S"]

BET = {"id": "b1", "userId": "u1", "contractId": "c1", "createdTime": 1700000001000,
       "amount": 5, "outcome": "YES", "probBefore": 0.5, "probAfter": 0.52,
       "fills": [{"amount": 5, "timestamp": 1700000001000, "shares": 9.6}]}
FILES: dict[str, str | bytes] = {  # name -> content of the files rows name as {name}
    "bets.json": json.dumps([BET]),
    "empty.json": "",
    "broken.json": '[{"id": "b1", ',
    "bets.csv": "bet_id,timestamp,amount,probability\nb1,1700000001000,5,0.52\n",
    "other.csv": "id,time\n1,2\n",
    "cursor.json": "{not json",
    "latin1.csv": b"bet_id,timestamp,amount,probability\n\xff\xfe\n",
}
QUERIES = [["query", "latest", "m-1"], ["query", "history", "m-1"],
           ["query", "asof", "m-1", "5"], ["query", "since", "m-1", "5"],
           ["query", "search", "m-"], ["query", "similar", "m-1"],
           ["query", "screen", "rsi14", "gt", "0.7"], ["query", "hot"], ["query", "stats"]]


def row(args: str, code: int, words: list[str], **env: str) -> Any:
    """One case: ``args`` (split on spaces; ``{name}`` is a file of FILES), exit status,
    words the line holds (case does not matter), more environment."""
    return pytest.param(args.split(), code, words, env, id=args)


def gswarm(args: list[str], env: dict[str, str], timeout: float = 90
           ) -> subprocess.CompletedProcess[str]:
    proc = subprocess.Popen([str(GSWARM), *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def assert_fails(done: subprocess.CompletedProcess[str], code: int, words: list[str]) -> None:
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("gswarm: error: "), done.stderr[-3000:]
    for word in words:
        assert word.lower() in lines[0].lower(), (word, lines[0])
    assert done.returncode == code, lines[0]


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """An environment with nothing running: broker, worker and local broker ports free.

    Should a `cluster up` start a supervisor after all (it must not), it is stopped by
    the PID in its state file.
    """
    base = {k: v for k, v in os.environ.items() if not k.startswith("GSWARM_")}
    libs = os.environ.get("GSWARM_KAFKA_LIBS")
    env = {**base, **({"GSWARM_KAFKA_LIBS": libs} if libs else {}),
           "GSWARM_BROKER": f"127.0.0.1:{free_port()}", "GSWARM_WEB_PORT": str(free_port()),
           "GSWARM_KAFKA_PORT": str(free_port()),
           "GSWARM_KAFKA_CONTROLLER_PORT": str(free_port()),
           "GSWARM_DATA_DIR": str(tmp_path / "data"),
           "GSWARM_KAFKA_DIR": str(tmp_path / "kafka"),
           "GSWARM_KAFKA_TIMEOUT_S": str(TIMEOUT_S), "GSWARM_QUERY_TIMEOUT_S": "1"}
    yield env
    started = cluster.down(Settings.from_env({k: v for k, v in env.items()
                                              if k.startswith("GSWARM_")}))
    assert not started, "a failing `cluster up` left a supervisor running"


@pytest.fixture
def files(tmp_path: Path) -> Callable[[list[str]], list[str]]:
    """Writes FILES under tmp_path; returns a function that puts their paths in args."""
    paths = {"{folder}": tmp_path}
    for name, content in FILES.items():
        paths[f"{{{name}}}"] = tmp_path / name
        if isinstance(content, bytes):
            paths[f"{{{name}}}"].write_bytes(content)
        else:
            paths[f"{{{name}}}"].write_text(content)

    def place(args: list[str]) -> list[str]:
        for mark, path in paths.items():
            args = [a.replace(mark, str(path)) for a in args]
        return args

    return place


# -- no broker, bad options, bad files: nothing needs to run ------------------------------


@pytest.mark.parametrize(("args", "code", "words", "more"), [
    row("topics apply", 1, NO_BROKER),
    row("topics list", 1, NO_BROKER),
    row("feed synthetic --count 10", 1, NO_BROKER),
    row("feed replay {bets.json}", 1, NO_BROKER),
    row("feed manifold --all", 1, NO_BROKER),
    row("feed polymarket --all", 1, NO_BROKER),
    row("feed polymarket --all --cursor-file {cursor.json}", 1, NO_BROKER),
    row("worker", 1, NO_BROKER),
    row("cluster up -n 1", 1, NO_BROKER),
    row("kafka status", 1, ["not running", "gswarm kafka up"]),
    row("cluster status", 1, ["no cluster runs", "gswarm cluster up"]),
    row("kafka fetch", 1, ["`mvn` was not found", "install"], PATH=str(GSWARM.parent),
        GSWARM_KAFKA_LIBS="/nonexistent/libs"),
    # bad option values and settings: found before anything is contacted
    row("--partitions 0 config", 2, ["--partitions", "range", "gswarm --help"]),
    row("--web-port 70000 query stats", 2, ["--web-port"]),
    row("config", 1, ["GSWARM_PARTITIONS='eight'", "whole number"], GSWARM_PARTITIONS="eight"),
    row("feed synthetic", 1, ["GSWARM_KAFKA_TIMEOUT_S=0.0", "> 0"], GSWARM_KAFKA_TIMEOUT_S="0"),
    # an API open to anyone is refused before anything starts
    row("worker", 1, ["GSWARM_WEB_HOST=0.0.0.0", "not a loopback", "GSWARM_API_TOKEN"],
        GSWARM_WEB_HOST="0.0.0.0"),
    row("cluster up -n 1", 1, ["GSWARM_WEB_HOST=10.0.0.7", "GSWARM_API_TOKEN"],
        GSWARM_WEB_HOST="10.0.0.7"),
    row("topics list", 1, ["GSWARM_KAFKA_SECURITY_PROTOCOL='TLS'", "SASL_SSL"],
        GSWARM_KAFKA_SECURITY_PROTOCOL="TLS"),
    row("feed synthetic", 1, ["GSWARM_KAFKA_PASSWORD_FILE", "cannot be read"],
        GSWARM_KAFKA_SECURITY_PROTOCOL="SASL_SSL", GSWARM_KAFKA_USERNAME="u",
        GSWARM_KAFKA_PASSWORD_FILE="/nonexistent/password"),
    row("no-such-command", 2, ["no such command"]),
    row("feed synthetic --markets 0", 2, ["--markets", "gswarm feed synthetic --help"]),
    row("feed synthetic --markets many", 2, ["--markets", "whole number"]),
    row("feed synthetic --rate nan", 2, ["--rate", "not a finite number >= 0"]),
    row("feed synthetic --count -1", 2, ["--count"]),
    row("feed synthetic --array 0", 2, ["--array"]),
    row("feed replay {bets.json} --speedup -1", 2, ["--speedup", ">= 0"]),
    row("feed manifold", 2, ["--all", "--markets"]),
    row("feed manifold --all --markets abc", 2, ["--all", "--markets"]),
    row("feed polymarket --markets fed-cut", 2, ["'fed-cut' is not a condition id"]),
    row("query screen rsi14 above 0.7", 2, ["'OP'", "'above'"]),
    row("query asof m-1 soon", 2, ["'soon'"]),
    row("cluster up -n 0", 2, ["--workers"]),
    row("run --rate 0", 2, ["--rate", "> 0"]),
    # files that are missing, unreadable or of the wrong format
    row("feed replay {folder}/missing.json", 2, ["does not exist"]),
    row("feed replay {folder}", 2, ["is a directory"]),
    row("feed replay {empty.json}", 1, ["empty.json", "empty"]),
    row("feed replay {broken.json}", 1, ["broken.json", "not valid JSON"]),
    row("feed replay {latin1.csv} --market m", 1, ["latin1.csv", "not UTF-8"]),
    row("feed replay {bets.csv}", 1, ["bets.csv", "give its market id"]),
    row("feed replay {other.csv} --market m", 1, ["other.csv", "lacks bet_id"]),
])
def test_offline_failures(env: dict[str, str], files: Callable[[list[str]], list[str]],
                          args: list[str], code: int, words: list[str],
                          more: dict[str, str]) -> None:
    if "GSWARM_BROKER" in words:
        words = [*words, env["GSWARM_BROKER"]]
    assert_fails(gswarm(files(args), {**env, **more}), code, words)


# -- a worker that does not answer --------------------------------------------------------


@pytest.mark.parametrize("args", [pytest.param(q, id=" ".join(q)) for q in QUERIES])
def test_queries_without_a_worker(env: dict[str, str], args: list[str]) -> None:
    assert_fails(gswarm(args, env), 1, [*NO_WORKER, env["GSWARM_WEB_PORT"]])
    with listening(int(env["GSWARM_WEB_PORT"])):  # accepts, never answers
        assert_fails(gswarm(args, env), 1, SILENT_WORKER)


@contextlib.contextmanager
def listening(port: int) -> Iterator[None]:
    """A socket listening on 127.0.0.1:port that never accepts (connections queue)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(16)
        yield


# -- ports in use ---------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "taken", "words"), [
    pytest.param(["worker"], "GSWARM_WEB_PORT", ["worker's web server", "--web-port"],
                 id="worker"),
    pytest.param(["cluster", "up", "-n", "1"], "GSWARM_WEB_PORT", ["--web-port"],
                 id="cluster up"),
    pytest.param(["kafka", "up"], "GSWARM_KAFKA_PORT", ["GSWARM_KAFKA_PORT"], id="kafka up"),
    pytest.param(["kafka", "up"], "GSWARM_KAFKA_CONTROLLER_PORT",
                 ["GSWARM_KAFKA_CONTROLLER_PORT"], id="kafka up (controller)"),
    pytest.param(["run"], "GSWARM_KAFKA_PORT", ["GSWARM_KAFKA_PORT"], id="run"),
])
def test_a_port_in_use(env: dict[str, str], args: list[str], taken: str,
                       words: list[str]) -> None:
    with listening(int(env[taken])):
        assert_fails(gswarm(args, env), 1, ["cannot listen", env[taken], *words])
    assert not (Path(env["GSWARM_KAFKA_DIR"]) / "broker.pid").exists()  # nothing started


def test_a_second_cluster_worker_port_in_use(env: dict[str, str]) -> None:
    port = free_port(span=2)
    with listening(port + 1):
        done = gswarm(["cluster", "up", "-n", "2"], {**env, "GSWARM_WEB_PORT": str(port)})
    assert_fails(done, 1, ["cannot listen", str(port + 1)])


# -- topics missing or with the wrong partition count (the session broker) ----------------


@pytest.fixture
def on_session_broker(env: dict[str, str], settings_factory: Callable[..., Settings]
                      ) -> tuple[dict[str, str], Settings]:
    """The environment pointed at the session broker with an app id of its own (no topics
    yet); the settings to create them with (4 partitions)."""
    s = settings_factory(partitions=4)
    return {**env, "GSWARM_BROKER": s.broker, "GSWARM_APP_ID": s.app_id,
            "GSWARM_PARTITIONS": "8"}, s


TOPIC_USERS = ["feed synthetic --count 10", "feed replay {bets.json}", "feed manifold --all",
               "feed polymarket --all", "worker", "cluster up -n 1"]


@pytest.mark.parametrize("args", TOPIC_USERS)
def test_topics_missing(on_session_broker: tuple[dict[str, str], Settings],
                        files: Callable[[list[str]], list[str]], args: str) -> None:
    env, _ = on_session_broker
    assert_fails(gswarm(files(args.split()), env), 1, MISSING_TOPIC)


@pytest.mark.parametrize("args", [*TOPIC_USERS, "run"])
def test_topics_with_another_partition_count(
    on_session_broker: tuple[dict[str, str], Settings],
    files: Callable[[list[str]], list[str]], kafka: LocalBroker, args: str,
) -> None:
    env, settings = on_session_broker
    asyncio.run(topics.apply(settings))
    if args == "run":  # `run` finds the session broker running, as its own
        env = {**env, **{k: v for k, v in kafka.settings.to_env().items() if k in (
            "GSWARM_KAFKA_DIR", "GSWARM_KAFKA_PORT", "GSWARM_KAFKA_CONTROLLER_PORT")}}
    assert_fails(gswarm(files(args.split()), env), 1, WRONG_PARTITIONS)


def test_topics_apply_reports_drift_in_one_line(
    on_session_broker: tuple[dict[str, str], Settings],
) -> None:
    env, settings = on_session_broker
    asyncio.run(topics.apply(settings))
    done = gswarm(["topics", "apply"], env)
    assert_fails(done, 3, ["difference", "partitions, declared 8", "delete the topic"])
    assert "DRIFT" in done.stdout


def test_a_cursor_file_that_is_not_json(
    on_session_broker: tuple[dict[str, str], Settings],
    files: Callable[[list[str]], list[str]],
) -> None:
    env, settings = on_session_broker
    asyncio.run(topics.apply(settings))
    done = gswarm(files(["feed", "polymarket", "--all", "--cursor-file", "{cursor.json}"]),
                  {**env, "GSWARM_PARTITIONS": "4", "GSWARM_LOG_LEVEL": "warn"})
    assert_fails(done, 1, ["cursor.json", "not JSON", "delete this one"])


# -- the broker goes away mid-run (a broker of this module's own, killed by its PID) -------


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    broker = LocalBroker(broker_settings(tmp_path_factory.mktemp("own-kafka")).override(
        app_id="gone", partitions=2))
    try:
        yield broker
    finally:
        broker.stop()


class Running:
    """A `gswarm` command running in its own process, stopped by its PID (and so is the
    worker `gswarm run` starts, by the PID it reports)."""

    def __init__(self, args: list[str], env: dict[str, str], folder: Path) -> None:
        self.out, self.err = folder / "stdout", folder / "stderr"
        with self.out.open("w") as out, self.err.open("w") as err:
            self.proc = subprocess.Popen([str(GSWARM), *args], env=env, stdout=out,
                                         stderr=err, start_new_session=True)

    def wait(self, timeout: float) -> subprocess.CompletedProcess[str]:
        self.proc.wait(timeout)
        return subprocess.CompletedProcess(self.proc.args, self.proc.returncode,
                                           self.out.read_text(), self.err.read_text())

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        for pid in re.findall(r"worker: pid (\d+)", self.out.read_text()):
            if b"gswarm.app" in _cmdline(int(pid)):
                os.kill(int(pid), signal.SIGKILL)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _ticks_on(settings: Settings) -> int:
    """How many messages the tick topic holds."""
    async def count() -> int:
        consumer = AIOKafkaConsumer(bootstrap_servers=settings.broker)
        await consumer.start()
        try:
            ends = await consumer.end_offsets(
                [TopicPartition(settings.tick_topic, p) for p in range(settings.partitions)])
            return sum(ends.values())
        finally:
            await consumer.stop()

    return asyncio.run(count())


def _wait_for_ticks(settings: Settings, running: Running, before: int) -> None:
    deadline = time.monotonic() + 90
    while _ticks_on(settings) <= before:
        assert running.proc.poll() is None, running.wait(10).stderr
        assert time.monotonic() < deadline, "the command sent nothing"
        time.sleep(0.3)


def _big_replay(tmp_path: Path) -> Path:
    """Bets 100 ms apart over 20 minutes: a replay at speed 1 takes that long."""
    maker = BetMaker(seed=2, start_ms=1_700_000_000_000)
    path = tmp_path / "long.jsonl"
    with path.open("w") as f:
        for i in range(12_000):
            bet = maker.bet(f"c{i % 5}", same_ms=True)
            f.write(json.dumps({**bet, "createdTime": 1_700_000_000_000 + 100 * i}) + "\n")
    return path


@pytest.mark.parametrize("kind", ["synthetic", "replay", "polymarket", "manifold", "run"])
def test_the_broker_goes_away_mid_run(own_broker: LocalBroker, env: dict[str, str],
                                      tmp_path: Path, kind: str) -> None:
    own_broker.start()
    s = own_broker.settings
    asyncio.run(topics.apply(s))
    env = {**env, **{k: v for k, v in s.to_env().items() if k in (
        "GSWARM_BROKER", "GSWARM_APP_ID", "GSWARM_PARTITIONS", "GSWARM_KAFKA_DIR",
        "GSWARM_KAFKA_PORT", "GSWARM_KAFKA_CONTROLLER_PORT")},
        "GSWARM_LOG_LEVEL": "error", "GSWARM_FEED_POLL_S": "0.2",
        "GSWARM_FEED_RETRY_S": "0.1"}
    before = _ticks_on(s)
    with _fake_api(kind, env) as push:
        running = Running(_command(kind, tmp_path), env, tmp_path)
        try:
            _wait_for_ticks(s, running, before)
            own_broker.kill()  # by its PID
            push()  # live feeds: something new to send
            done = running.wait(60)
        finally:
            running.stop()
    assert_fails(done, 1, [*GONE, s.broker])


def _command(kind: str, tmp_path: Path) -> list[str]:
    return {
        "synthetic": ["feed", "synthetic", "--rate", "500", "--count", "1000000"],
        "replay": ["feed", "replay", str(_big_replay(tmp_path)), "--speedup", "1"],
        "polymarket": ["feed", "polymarket", "--all", "--cursor-file",
                       str(tmp_path / "cursor")],
        "manifold": ["feed", "manifold", "--all", "--cursor-file", str(tmp_path / "cursor")],
        "run": ["run", "--markets", "50", "--rate", "200"],
    }[kind]


@contextlib.contextmanager
def _fake_api(kind: str, env: dict[str, str]) -> Iterator[Callable[[], None]]:
    """For a live feed, its API on a local fake (set in ``env``); yields a function that
    adds new items (trades, bets pushed on the websocket)."""
    if kind not in ("polymarket", "manifold"):
        yield lambda: None
        return
    fake: LocalServer
    if kind == "polymarket":
        trades = TradeMaker(seed=1)
        fake = polymarket = FakePolymarket([trades.trade() for _ in range(20)])
        env["GSWARM_POLYMARKET_API"] = fake.url

        async def more() -> None:
            polymarket.trades += [trades.trade() for _ in range(5)]
    else:
        bets = BetMaker(seed=1)
        fake = manifold = FakeManifold([bets.bet("c1") for _ in range(20)])
        env.update(GSWARM_MANIFOLD_API=fake.url, GSWARM_MANIFOLD_WS=manifold.ws_url)

        async def more() -> None:
            await manifold.add_bets([bets.bet("c1") for _ in range(5)])
    with ServerThread(fake) as server:
        yield lambda: server.call(more())
