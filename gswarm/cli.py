"""The ``gswarm`` command: local broker, topics, workers, feeds and queries.

Global flags override the environment (see ``gswarm config``); each sub-command reads the
resulting :class:`~gswarm.config.Settings` from the click context. Every failure ends the
command with one line on stderr (``gswarm: error: ...``, see :mod:`gswarm.failures`) and
a non-zero exit status: 1, 2 for a bad command line, 3 for topic drift, 130 if
interrupted.
"""

from __future__ import annotations

import asyncio
import math
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from gswarm.config import Settings, describe, markdown_row
from gswarm.errors import BrokerError, ConfigError, TopicDriftError, WorkerError
from gswarm.failures import explain, one_line, unexpected

pass_settings = click.make_pass_decorator(Settings)
F = TypeVar("F", bound=Callable[..., Any])


class _Whole(click.IntRange):
    name = "whole number"  # click says "integer range", which puzzles more than it helps


PORT = _Whole(1, 65535)
POSITIVE = _Whole(min=1)


class Failed(Exception):
    """A command failed with ``error``; ``settings`` are those it ran with, if read."""

    def __init__(self, error: Exception, settings: Settings | None) -> None:
        super().__init__(str(error))
        self.error, self.settings = error, settings


class GswarmGroup(click.Group):
    """The root group: an error escaping a command is passed on with its settings."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:
            raise Failed(exc, ctx.obj if isinstance(ctx.obj, Settings) else None) from exc


@click.group(cls=GswarmGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--app-id", help="Overrides GSWARM_APP_ID.")
@click.option("--broker", help="Overrides GSWARM_BROKER.")
@click.option("--partitions", type=POSITIVE, help="Overrides GSWARM_PARTITIONS.")
@click.option("--data-dir", type=click.Path(path_type=Path), help="Overrides GSWARM_DATA_DIR.")
@click.option("--web-port", type=PORT, help="Overrides GSWARM_WEB_PORT.")
@click.option("--lean/--no-lean", default=None, help="Overrides GSWARM_LEAN.")
@click.option("--retention", "retention_s", type=click.FloatRange(min=0, min_open=True),
              help="Overrides GSWARM_RETENTION_S.")
@click.pass_context
def cli(ctx: click.Context, /, **flags: Any) -> None:
    """Gswarm: real-time prediction-market intelligence on Kafka and Faust."""
    ctx.obj = Settings.from_env().override(**flags)
    _quiet_kafka_client(ctx.obj)


def main() -> None:
    """Console entry point: every failure is one line on stderr and a non-zero status."""
    try:
        cli(standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):
        _fail("interrupted", 130)
    except click.UsageError as exc:
        where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
        _fail(exc.format_message() + where, exc.exit_code)
    except click.ClickException as exc:
        _fail(exc.format_message(), exc.exit_code)
    except Failed as failed:
        error = explain(failed.error, failed.settings)
        trace = failed.error if failed.settings is not None and failed.settings.traceback else None
        if error is None:
            _fail(unexpected(failed.error), 1, trace)
        _fail(str(error), error.exit_code, trace)


def _fail(message: str, code: int, trace: BaseException | None = None) -> NoReturn:
    """Say ``message`` in one line on stderr (then ``trace``'s traceback) and exit."""
    click.echo(f"gswarm: error: {one_line(message)}", err=True)
    if trace is not None:
        import traceback

        traceback.print_exception(trace)
    sys.exit(code)


def _quiet_kafka_client(settings: Settings) -> None:
    """aiokafka logs every failed connection attempt; a command reports Kafka failures
    itself, in one line, so the client's own log is only shown at the debug level."""
    import logging

    if settings.log_level != "debug":
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


@cli.command("config")
@click.option("--current", is_flag=True,
              help="Print the values in force instead (secrets masked as ***).")
@pass_settings
def config_cmd(settings: Settings, current: bool) -> None:
    """Print every setting: environment variable, default, meaning (Markdown table)."""
    if current:
        for env, value in settings.shown():
            click.echo(f"{env}={value}")
        return
    click.echo("| variable | default | meaning |\n| --- | --- | --- |")
    for env, default, doc in describe():
        click.echo(markdown_row(env, default, doc))


# -- local broker ----------------------------------------------------------------------------


@cli.group()
def kafka() -> None:
    """The local single-node Kafka broker (KRaft) on 127.0.0.1."""


@kafka.command("fetch")
@pass_settings
def kafka_fetch(settings: Settings) -> None:
    """Resolve the broker's jars from Maven Central (once)."""
    from gswarm.kafka.broker import LocalBroker

    broker = LocalBroker(settings)
    broker.fetch()
    click.echo(f"Kafka jars in {broker.libs}")


@kafka.command("up")
@click.option("--brokers", type=click.IntRange(1, 9), default=1, show_default=True,
              help="Nodes: 1 is the single broker; more start a local KRaft cluster "
                   "(replication factor 3, min.insync.replicas 2).")
@pass_settings
def kafka_up(settings: Settings, brokers: int) -> None:
    """Start the broker (or a local cluster) unless it runs, and wait until it answers."""
    from gswarm.kafka.broker import LocalBroker, LocalCluster

    if brokers > 1:
        cluster = LocalCluster(settings, brokers)
        started = cluster.start()
        click.echo(f"Kafka cluster of {brokers} {'started' if started else 'already running'}: "
                   f"pids {' '.join(str(p) for p in cluster.pids())}, data {cluster.home}")
        click.echo(f"use it with GSWARM_BROKER={cluster.bootstrap} "
                   f"GSWARM_REPLICATION={cluster.replication}")
        return
    broker = LocalBroker(settings)
    started = broker.start()
    verb = "started" if started else "already running"
    click.echo(
        f"Kafka broker {verb}: pid {broker.pid()}, listening on {broker.bootstrap} "
        f"(data {broker.data}, logs {broker.logs})"
    )


@kafka.command("down")
@pass_settings
def kafka_down(settings: Settings) -> None:
    """Stop the broker, and every node of a local cluster, by their PIDs (fine if none
    runs)."""
    from gswarm.kafka.broker import LocalBroker, local_clusters

    stopped = LocalBroker(settings).stop()
    click.echo("Kafka broker stopped" if stopped else "Kafka broker was not running")
    for cluster in local_clusters(settings):
        if cluster.stop():
            click.echo(f"Kafka cluster of {cluster.size} stopped")


@kafka.command("status")
@pass_settings
def kafka_status(settings: Settings) -> None:
    """Say whether the broker runs and answers; fail (exit 1) if it does not."""
    from gswarm.kafka.broker import LocalBroker

    broker = LocalBroker(settings)
    st = broker.status()
    if not st.running:
        raise BrokerError(f"the local Kafka broker is not running (it would listen on "
                          f"{st.bootstrap}): start it with `gswarm kafka up`")
    if not st.answering:
        raise BrokerError(f"the local Kafka broker runs (pid {st.pid}) but does not answer on "
                          f"{st.bootstrap}: see {broker.logs}, or restart it (`gswarm kafka "
                          "down`, then `gswarm kafka up`)")
    click.echo(f"Kafka broker running: pid {st.pid}, {st.bootstrap}, answering")


# -- topics ----------------------------------------------------------------------------------


@cli.group()
def topics() -> None:
    """The topics declared in topics/topics.toml."""


@topics.command("apply")
@pass_settings
def topics_apply(settings: Settings) -> None:
    """Create missing topics; report drift (exit 3 if any)."""
    from gswarm.kafka.topics import apply

    report = asyncio.run(apply(settings))
    for name in report.created:
        click.echo(f"created   {name}")
    for name in report.unchanged:
        click.echo(f"unchanged {name}")
    for line in report.drift:
        click.echo(f"DRIFT     {line}")
    if report.drift:
        raise TopicDriftError(
            f"{len(report.drift)} difference(s) between the broker and topics/topics.toml "
            f"(DRIFT above; first: {report.drift[0]}): apply never changes an existing "
            "topic; fix the declaration or settings, or delete the topic and apply again")


@topics.command("list")
@pass_settings
def topics_list(settings: Settings) -> None:
    """List declared topics with what the broker has for them."""
    from gswarm.kafka.topics import describe_declared

    for spec, actual in asyncio.run(describe_declared(settings)):
        have = (
            "missing" if actual is None
            else f"{actual['partitions']} partitions, replication {actual['replication']}"
        )
        cfg = ", ".join(f"{k}={v}" for k, v in spec.configs.items())
        click.echo(f"{spec.name:<28} declared {spec.partitions} partitions, {cfg}; broker: {have}")


# -- workers ---------------------------------------------------------------------------------


@cli.command("worker")
@click.option("--name", default="worker", help="Sub-folder of the data dir for its state.")
@pass_settings
def worker_cmd(settings: Settings, name: str) -> None:
    """Run one worker in the foreground (same as `faust -A gswarm.app worker -l info`)."""
    from gswarm.runner import WorkerProcess, preflight

    asyncio.run(preflight(settings, [settings.web_port]))
    wp = WorkerProcess(settings, name)
    wp.datadir.mkdir(parents=True, exist_ok=True)
    os.execvpe(wp.command()[0], wp.command(), {**os.environ, **settings.to_env()})


def _finite(lowest: float, *, open_: bool = False) -> Callable[..., float]:
    """A callback that accepts a finite number >= ``lowest`` (> with ``open_``): click's
    FloatRange lets NaN through."""
    rule = f"{'>' if open_ else '>='} {lowest:g}"

    def check(ctx: click.Context, param: click.Parameter, value: float) -> float:
        if not math.isfinite(value) or value < lowest or (open_ and value == lowest):
            raise click.BadParameter(f"{value} is not a finite number {rule}")
        return value

    return check


@cli.command("run")
@click.option("--markets", default=500, show_default=True, type=POSITIVE,
              help="Synthetic markets.")
@click.option("--rate", default=2000.0, show_default=True, callback=_finite(0, open_=True),
              help="Synthetic ticks per second.")
@click.option("--seed", default=1, show_default=True)
@pass_settings
def run_cmd(settings: Settings, markets: int, rate: float, seed: int) -> None:
    """The main job: local broker, topics, a lean worker, the synthetic feed (Ctrl-C stops)."""
    from gswarm.feeds.synthetic import synthetic_ticks
    from gswarm.kafka.broker import LocalBroker
    from gswarm.kafka.topics import apply
    from gswarm.runner import WorkerProcess, preflight

    _interrupt_on_signals()
    broker = LocalBroker(settings)
    started = broker.start()
    click.echo(f"kafka: {'started' if started else 'already running'} on {broker.bootstrap}")
    report = asyncio.run(apply(settings))
    click.echo(f"topics: created {report.created or 'none'}; drift {report.drift or 'none'}")
    asyncio.run(preflight(settings, [settings.web_port]))  # also: partition counts drifted
    worker = WorkerProcess(settings, "worker")
    worker.start()
    click.echo(f"worker: pid {worker.pid}, log {worker.log_path}; waiting for partitions...")
    try:
        worker.wait_ready()
        click.echo(f"worker: ready, API on {settings.web_url}/api/stats")
        click.echo(f"feed: synthetic, {markets} markets at {rate:.0f} ticks/s (Ctrl-C stops)")
        ticks = synthetic_ticks(markets, 10**12, seed, rate=rate)
        asyncio.run(_until_signal(_produce(settings, ticks, rate=rate)))
    except KeyboardInterrupt:
        click.echo("stopping")
    finally:
        worker.stop()
        click.echo("worker stopped; the broker keeps running (make kafka-down stops it)")


async def _until_signal(work: Awaitable[Any]) -> None:
    """Run ``work`` until it ends or SIGINT/SIGTERM cancels it (its cleanup still runs)."""
    import signal

    task = asyncio.ensure_future(work)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        click.echo("\nstopping")


def _interrupt_on_signals() -> None:
    """Ctrl-C and SIGTERM both end `run` through its cleanup (stopping the worker).

    A shell starting a background job ignores SIGINT for it; restore the default so the
    job can still be interrupted, and treat SIGTERM the same way.
    """
    import signal

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)


# -- feeds -----------------------------------------------------------------------------------


@cli.group()
def feed() -> None:
    """Kafka producers of ticks."""


async def _produce(settings: Settings, ticks: Any, **options: Any) -> Any:
    """Send ticks to the tick topic (once it is there, with the right partitions)."""
    from gswarm.feeds.producer import produce
    from gswarm.kafka import security
    from gswarm.kafka.topics import require

    await require(settings, ["ticks"])
    return await produce(settings.broker, settings.tick_topic, ticks,
                         timeout_s=settings.kafka_timeout_s,
                         security=security.options(settings), **options)


@feed.command("synthetic")
@click.option("--markets", default=1000, show_default=True, type=POSITIVE)
@click.option("--rate", default=0.0, show_default=True, callback=_finite(0),
              help="Ticks per second (0: max).")
@click.option("--count", default=100_000, show_default=True, type=_Whole(min=0))
@click.option("--seed", default=1, show_default=True)
@click.option("--array", "array_size", default=1, show_default=True, type=POSITIVE,
              help="Ticks per message (arrays of one market's ticks).")
@pass_settings
def feed_synthetic(
    settings: Settings, markets: int, rate: float, count: int, seed: int, array_size: int
) -> None:
    """Seeded synthetic ticks: Zipf-skewed markets, bounded random walks."""
    from gswarm.feeds.synthetic import synthetic_ticks

    ticks = synthetic_ticks(markets, count, seed, rate=rate or 1000.0)
    summary = asyncio.run(_produce(settings, ticks, rate=rate or None,
                                   array_size=array_size, total=count))
    click.echo(str(summary))


@feed.command("replay")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--market", help="Market id (required for a CSV export, which has none).")
@click.option("--speedup", default=0.0, show_default=True, callback=_finite(0),
              help="Replay speed relative to the original (0: as fast as possible).")
@pass_settings
def feed_replay(settings: Settings, path: Path, market: str | None, speedup: float) -> None:
    """Replay a Manifold bets file (CSV export or JSON bets) in original order."""
    from gswarm.feeds.replay import paced, read_bets

    result = read_bets(path, market)
    for line, reason in result.errors:
        click.echo(f"{path}:{line}: skipped: {reason}", err=True)
    summary = asyncio.run(_produce(settings, paced(result.ticks, speedup),
                                   total=len(result.ticks)))
    click.echo(f"{summary}; {result.skipped} bets skipped (redemptions, unfilled orders), "
               f"{len(result.errors)} bad rows")


def _live_options(name: str, all_markets: bool, markets: str | None,
                  cursor_file: Path | None, check: Callable[[str], None] | None = None) -> Any:
    """The feed's options; a bad choice (``check`` judges each market) is a usage error."""
    from gswarm.errors import FeedError
    from gswarm.feeds.manifold import Watch
    from gswarm.feeds.runner import FeedOptions

    names = tuple(m.strip() for m in (markets or "").split(",") if m.strip())
    try:
        for market in names:
            if check is not None:
                check(market)
        return FeedOptions(name, Watch(all_markets, names), cursor_file)
    except FeedError as exc:
        raise click.UsageError(str(exc)) from None


def _live_flags(default_name: str) -> Callable[[F], F]:
    def wrap(f: F) -> F:
        for option in reversed([
            click.option("--all", "all_markets", is_flag=True, help="Follow every market."),
            click.option("--markets", help="Follow these markets only (comma separated)."),
            click.option("--name", default=default_name, show_default=True,
                         help="Feed name: the key of its cursor (run several with distinct "
                              "names)."),
            click.option("--cursor-file", type=click.Path(dir_okay=False, path_type=Path),
                         help="Keep the cursor in this local file instead of the "
                              "feed-cursors topic."),
        ]):
            f = option(f)
        return f
    return wrap


@feed.command("manifold")
@_live_flags("manifold")
@pass_settings
def feed_manifold(settings: Settings, all_markets: bool, markets: str | None, name: str,
                  cursor_file: Path | None) -> None:
    """Live Manifold bets (websocket + REST gap fill) and market metadata; Ctrl-C stops.

    --markets takes slugs or market ids. A restarted feed resumes from its cursor.
    """
    from gswarm.feeds.runner import run_manifold

    options = _live_options(name, all_markets, markets, cursor_file)
    _logging(settings)
    asyncio.run(_until_signal(run_manifold(settings, options)))


@feed.command("polymarket")
@_live_flags("polymarket")
@pass_settings
def feed_polymarket(settings: Settings, all_markets: bool, markets: str | None, name: str,
                    cursor_file: Path | None) -> None:
    """Live Polymarket trades (polled data API); Ctrl-C stops.

    --markets takes condition ids (0x...). A restarted feed resumes from its cursor.
    """
    from gswarm.feeds.polymarket import check_condition_id
    from gswarm.feeds.runner import run_polymarket

    options = _live_options(name, all_markets, markets, cursor_file, check_condition_id)
    _logging(settings)
    asyncio.run(_until_signal(run_polymarket(settings, options)))


def _logging(settings: Settings) -> None:
    import logging

    level = {"crit": "CRITICAL", "warn": "WARNING"}.get(settings.log_level,
                                                         settings.log_level.upper())
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


# -- queries ---------------------------------------------------------------------------------


def _ask(settings: Settings, path: str, **params: Any) -> None:
    import json
    import urllib.error
    import urllib.parse

    from gswarm.web.client import open_url

    query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None},
                                   doseq=True)
    url = f"{settings.web_url}{path}" + (f"?{query}" if query else "")
    start = ("start one (`gswarm worker`, `gswarm run` or `gswarm cluster up`) or point "
             "--web-port / GSWARM_WEB_PORT at a running one")
    try:
        with open_url(settings, url, settings.query_timeout_s) as resp:
            body = resp.read()
    except urllib.error.HTTPError as exc:
        raise WorkerError(f"the worker answered {exc.code} to {url}: "
                          f"{_error_of(exc.read())}") from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            raise _no_answer(settings) from None
        raise WorkerError(f"no worker answers at {settings.web_url} ({exc.reason}): "
                          f"{start}") from None
    except TimeoutError:
        raise _no_answer(settings) from None
    except OSError as exc:  # the connection broke while it answered
        raise WorkerError(f"the worker at {settings.web_url} broke off its answer ({exc}): "
                          "see its log, then ask again") from None
    try:
        doc = json.loads(body)
    except ValueError:
        raise WorkerError(f"what answers at {settings.web_url} is not a Gswarm worker (its "
                          f"answer is not JSON): {start}") from None
    click.echo(json.dumps(doc, indent=2))


def _no_answer(settings: Settings) -> WorkerError:
    return WorkerError(
        f"the worker at {settings.web_url} did not answer within {settings.query_timeout_s:g} "
        "s (GSWARM_QUERY_TIMEOUT_S): it may be starting, busy or stuck; see its log, then "
        "ask again")


def _error_of(body: bytes) -> str:
    """The ``error`` of a worker's JSON error answer, else the start of the body."""
    import json

    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("error"), str):
        return str(doc["error"])
    return body[:200].decode(errors="replace")


@cli.group()
def query() -> None:
    """Ask a running worker (its web API; routed to the partition's owner)."""


@query.command("latest")
@click.argument("market")
@pass_settings
def q_latest(settings: Settings, market: str) -> None:
    """Latest state of a market."""
    _ask(settings, f"/api/markets/{_quote(market)}")


@query.command("history")
@click.argument("market")
@click.option("--attr", default="tick/probability", show_default=True)
@click.option("--from", "start", type=int, help="Event time (ms), inclusive.")
@click.option("--to", "end", type=int, help="Event time (ms), inclusive.")
@click.option("--limit", type=int, default=1000, show_default=True)
@pass_settings
def q_history(settings: Settings, market: str, attr: str, start: int | None,
              end: int | None, limit: int) -> None:
    """A market's series of one attribute between two times."""
    _ask(settings, f"/api/markets/{_quote(market)}/history", attr=attr, limit=limit,
         **{"from": start, "to": end})


@query.command("asof")
@click.argument("market")
@click.argument("t", type=int)
@click.option("--attr", default="tick/probability", show_default=True)
@pass_settings
def q_asof(settings: Settings, market: str, t: int, attr: str) -> None:
    """The value of an attribute of a market at time T (ms)."""
    _ask(settings, f"/api/markets/{_quote(market)}/asof", t=t, attr=attr)


@query.command("since")
@click.argument("market")
@click.argument("ts", type=int)
@click.option("--seq", type=int, help="Second half of the tx (default: after all of ts).")
@pass_settings
def q_since(settings: Settings, market: str, ts: int, seq: int | None) -> None:
    """Datoms of a market after the tx (TS, SEQ)."""
    _ask(settings, f"/api/markets/{_quote(market)}/since", ts=ts, seq=seq)


@query.command("search")
@click.argument("prefix", default="")
@click.option("--limit", type=int, default=100, show_default=True)
@pass_settings
def q_search(settings: Settings, prefix: str, limit: int) -> None:
    """Market ids starting with PREFIX."""
    _ask(settings, "/api/markets", prefix=prefix, limit=limit)


@query.command("similar")
@click.argument("market")
@click.option("-k", type=int, default=10, show_default=True)
@click.option("--min", "min_score", type=float, default=-1.0, show_default=True)
@pass_settings
def q_similar(settings: Settings, market: str, k: int, min_score: float) -> None:
    """Top-k markets most similar to MARKET (cosine over alpha vectors)."""
    _ask(settings, f"/api/similar/{_quote(market)}", k=k, min=min_score)


@query.command("screen")
@click.argument("component", required=False)
@click.argument("op", type=click.Choice(["gt", "ge", "lt", "le"]), metavar="OP",
                required=False)
@click.argument("value", type=float, required=False)
@click.option("--where", "where", multiple=True, metavar="COMPONENT:OP:VALUE",
              help="A condition (repeatable; all must hold), e.g. --where log_odds:lt:0.")
@click.option("--sort", default=None, help="Component to sort by (default: the first "
              "condition's).")
@click.option("--order", type=click.Choice(["asc", "desc"]), default=None)
@click.option("--limit", type=int, default=100, show_default=True)
@pass_settings
def q_screen(settings: Settings, component: str | None, op: str | None, value: float | None,
             where: tuple[str, ...], sort: str | None, order: str | None, limit: int) -> None:
    """Markets whose alpha COMPONENT compares OP to VALUE (e.g. rsi14 gt 0.7), and every
    --where condition."""
    if component is not None and (op is None or value is None):
        raise click.UsageError("give COMPONENT OP VALUE together (e.g. rsi14 gt 0.7)")
    _ask(settings, "/api/screen", component=component, op=op, value=value,
         where=list(where) or None, sort=sort, order=order, limit=limit)


def _quote(market: str) -> str:
    import urllib.parse

    return urllib.parse.quote(market, safe="")


@query.command("hot")
@click.option("-k", type=int, default=10, show_default=True)
@click.option("--window", type=float, help="Only the last WINDOW seconds (event time).")
@pass_settings
def q_hot(settings: Settings, k: int, window: float | None) -> None:
    """The hottest markets (most ticks; Count-Min estimates), overall or in a window."""
    _ask(settings, "/api/hot", k=k, window=window)


@query.command("stats")
@pass_settings
def q_stats(settings: Settings) -> None:
    """Counters, unique markets and traders (HyperLogLog), cluster-wide."""
    _ask(settings, "/api/stats")


# -- signals ---------------------------------------------------------------------------------


@cli.group("signals")
def signals_group() -> None:
    """Signal rules (signals/rules.toml) and the signals topic."""


@signals_group.command("check")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def signals_check(path: Path) -> None:
    """Validate a rules file without starting anything (one line per error; exit 1)."""
    from gswarm.core.signals import load_rules

    rules = load_rules(path)
    kinds = ", ".join(sorted({r.kind for r in rules.rules})) or "none"
    click.echo(f"{path}: {len(rules.rules)} rules ok (kinds: {kinds})")


@signals_group.command("tail")
@click.option("--rule", help="Only this rule's signals.")
@click.option("--market", help="Only this market's signals.")
@click.option("--from-start", is_flag=True, help="From the topic's start, not its end.")
@click.option("--count", default=0, type=_Whole(min=0), help="Stop after COUNT (0: never).")
@click.option("--json", "as_json", is_flag=True, help="Print each signal as its JSON.")
@pass_settings
def signals_tail(settings: Settings, rule: str | None, market: str | None, from_start: bool,
                 count: int, as_json: bool) -> None:
    """Print signals as they arrive (Ctrl-C stops)."""
    import orjson

    from gswarm.kafka.signals import line, tail

    def echo(doc: dict[str, Any]) -> None:
        click.echo(orjson.dumps(doc).decode() if as_json else line(doc))

    asyncio.run(_until_signal(tail(settings, echo, rule=rule, market=market,
                                   from_start=from_start, count=count)))


# -- local cluster ---------------------------------------------------------------------------


@cli.group("cluster")
def cluster_group() -> None:
    """N supervised workers on this machine (ports GSWARM_WEB_PORT, +1, ...)."""


@cluster_group.command("up")
@click.option("--workers", "-n", default=2, show_default=True, type=POSITIVE)
@pass_settings
def cluster_up(settings: Settings, workers: int) -> None:
    """Start the workers under a supervisor that restarts any that dies."""
    from gswarm import cluster

    state = cluster.up(settings, workers)
    click.echo(f"cluster: supervisor pid {state['supervisor']}")
    for w in state["workers"]:
        click.echo(f"  {w['name']}: pid {w['pid']}, {w['url']}, log {w['log']}")


@cluster_group.command("down")
@pass_settings
def cluster_down(settings: Settings) -> None:
    """Stop the supervisor and exactly its workers (by PID)."""
    from gswarm import cluster

    click.echo("cluster stopped" if cluster.down(settings) else "no cluster was running")


@cluster_group.command("status")
@pass_settings
def cluster_status(settings: Settings) -> None:
    """Which worker owns which partitions, standbys, the leader, consumer lag (fails if no
    cluster runs)."""
    from gswarm import cluster

    rows = cluster.status(settings)
    if not rows:
        raise WorkerError(f"no cluster runs here (no state under {cluster.cluster_dir(settings)})"
                          ": start one with `gswarm cluster up`")
    for row in rows:
        view = row["view"]
        head = f"{row['name']} pid {row['pid']} {'up' if row['alive'] else 'DOWN'}"
        head += f", restarts {row['restarts']}, {row['url']}"
        if "error" in view:
            click.echo(f"{head}: not answering ({view['error']})")
            continue
        role = "LEADER" if view["leader"] else "follower"
        lag = sum(v or 0 for v in view["lag"].values())
        click.echo(f"{head}: {role}, active {view['active']}, standby {view['standby']}, "
                   f"lag {lag}")


# -- benchmarks ------------------------------------------------------------------------------


@cli.command("bench", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench_cmd(args: tuple[str, ...]) -> None:
    """The benchmark suite (or single parts of it), on a broker of its own.

    ARGS go to the suite: PART names (ceiling, throughput, wide, arrays, latency, failover,
    recovery, memory, sketches, queries, signals, failover, steady; default all), --quick,
    --results DIR, --markdown FILE; or `chaos [--seconds S --worker-kills N --broker-kills N
    --seed N --runs N]`. Needs a source checkout (the suite lives in bench/, not in the
    package) and `pip install -e ".[bench]"` for the Quix Streams peer and DataSketches.
    """
    import signal
    import subprocess

    from gswarm.config import PROJECT_ROOT

    if not (PROJECT_ROOT / "bench" / "suite.py").is_file():
        raise ConfigError(
            f"gswarm bench needs a source checkout: no bench/suite.py under {PROJECT_ROOT}")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))}
    # `gswarm bench chaos [--seconds ...]`: the chaos soak (bench/chaos.py), not a suite part
    module, rest = ("bench.chaos", args[1:]) if args[:1] == ("chaos",) else ("bench.suite", args)
    child = subprocess.Popen([sys.executable, "-m", module, *rest], cwd=PROJECT_ROOT, env=env)
    # Ctrl-C reaches the suite too (same process group): it stops the brokers and workers
    # it started, by PID, and exits. ``subprocess.run`` would SIGKILL it 0.25 s after the
    # interrupt, before that cleanup ran, and leave them all running; so wait it out here.
    # A SIGTERM sent to this process alone is passed on.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: child.terminate())
    try:
        code = child.wait()
    finally:
        signal.signal(signal.SIGINT, previous)
    sys.exit(code)
