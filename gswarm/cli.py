"""The ``gswarm`` command: local broker, topics, workers, feeds and queries.

Global flags override the environment (see ``gswarm config``); each sub-command reads the
resulting :class:`~gswarm.config.Settings` from the click context.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import click

from gswarm.config import Settings, describe
from gswarm.errors import GswarmError

pass_settings = click.make_pass_decorator(Settings)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--app-id", help="Overrides GSWARM_APP_ID.")
@click.option("--broker", help="Overrides GSWARM_BROKER.")
@click.option("--partitions", type=int, help="Overrides GSWARM_PARTITIONS.")
@click.option("--data-dir", type=click.Path(path_type=Path), help="Overrides GSWARM_DATA_DIR.")
@click.option("--web-port", type=int, help="Overrides GSWARM_WEB_PORT.")
@click.option("--lean/--no-lean", default=None, help="Overrides GSWARM_LEAN.")
@click.option("--retention", "retention_s", type=float, help="Overrides GSWARM_RETENTION_S.")
@click.pass_context
def cli(ctx: click.Context, /, **flags: Any) -> None:
    """Gswarm: real-time prediction-market intelligence on Kafka and Faust."""
    ctx.obj = Settings.from_env().override(**flags)


def main() -> None:
    """Console entry point: domain errors print one clear line and exit 1."""
    try:
        cli(standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except GswarmError as exc:
        click.echo(f"gswarm: error: {exc}", err=True)
        sys.exit(1)


@cli.command("config")
def config_cmd() -> None:
    """Print every setting: environment variable, default, meaning (Markdown table)."""
    click.echo("| variable | default | meaning |\n| --- | --- | --- |")
    for env, default, doc in describe():
        click.echo(f"| `{env}` | `{default}` | {doc} |")


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
@pass_settings
def kafka_up(settings: Settings) -> None:
    """Start the broker unless it runs, and wait until it answers."""
    from gswarm.kafka.broker import LocalBroker

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
    """Stop the broker by its PID (fine if it is not running)."""
    from gswarm.kafka.broker import LocalBroker

    stopped = LocalBroker(settings).stop()
    click.echo("Kafka broker stopped" if stopped else "Kafka broker was not running")


@kafka.command("status")
@pass_settings
def kafka_status(settings: Settings) -> None:
    """Say whether the broker runs and answers; exit 1 if it does not."""
    from gswarm.kafka.broker import LocalBroker

    st = LocalBroker(settings).status()
    if not st.running:
        click.echo(f"Kafka broker not running (would listen on {st.bootstrap})")
        sys.exit(1)
    state = "answering" if st.answering else "NOT answering"
    click.echo(f"Kafka broker running: pid {st.pid}, {st.bootstrap}, {state}")
    sys.exit(0 if st.answering else 1)


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
        click.echo(f"DRIFT     {line}", err=True)
    if report.drift:
        sys.exit(3)


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
