"""Prometheus metrics at /metrics: Faust's sensor plus Gswarm's own counters.

Gswarm's figures are read from the in-process counters when scraped, so the ingest path
pays nothing for them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from faust.sensors.prometheus import setup_prometheus_sensors
from prometheus_client import REGISTRY
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector

from gswarm.stream.pipeline import Counters


class GswarmCollector(Collector):
    """Exports :class:`Counters` and sketch estimates at scrape time."""

    def __init__(self, counters: Counters, estimates: Callable[[], dict[str, float]]):
        self.counters = counters
        self.estimates = estimates

    def collect(self) -> Iterator[Any]:
        c = self.counters
        ticks = CounterMetricFamily("gswarm_ticks", "Ticks stored as facts", labels=["source"])
        for source, n in sorted(c.ticks_by_source.items()):
            ticks.add_metric([source], n)
        yield ticks
        dead = CounterMetricFamily("gswarm_dead_letters", "Dead letters", labels=["reason"])
        for reason, n in sorted(c.dead_letters.items()):
            dead.add_metric([reason], n)
        yield dead
        fired = CounterMetricFamily("gswarm_signals", "Signals fired (new ticks only, not "
                                    "re-sent after a redelivery)", labels=["rule"])
        for rule, n in sorted(c.signals.items()):
            fired.add_metric([rule], n)
        yield fired
        plain: tuple[tuple[str, str, float], ...] = (
            ("gswarm_messages", "Tick messages consumed", c.messages),
            ("gswarm_duplicates", "Ticks skipped as redelivered or duplicate bets",
             c.duplicates),
            ("gswarm_resent_ticks", "Stored ticks re-sent to the changelog", c.resent),
            ("gswarm_pruned_segments", "Segments dropped by the pruner", c.pruned_segments),
            ("gswarm_segments", "Segments written (changelog messages of facts)", c.segments),
        )
        for name, doc, value in plain:
            yield CounterMetricFamily(name, doc, value=value)
        yield SummaryMetricFamily("gswarm_batch_messages", "Messages per ingest batch",
                                  count_value=c.batches, sum_value=c.batch_messages_sum)
        yield SummaryMetricFamily("gswarm_flush_seconds", "Time to process one batch",
                                  count_value=c.batches, sum_value=c.flush_ms_sum / 1000)
        for ring, name, doc in (
                (c.lag, "gswarm_event_lag_ms",
                 "Now minus event time of recent facts when they became queryable"),
                (c.arrival_lag, "gswarm_arrival_lag_ms",
                 "Now minus Kafka record time of recent messages when their facts became "
                 "queryable (produce -> queryable)")):
            lag = ring.summary()
            if lag["count"]:
                gauge = GaugeMetricFamily(name, doc, labels=["quantile"])
                for q, key in (("0.5", "p50"), ("0.99", "p99"), ("1", "max")):
                    gauge.add_metric([q], float(lag[key] or 0.0))
                yield gauge
        behind = GaugeMetricFamily(
            "gswarm_behind_messages",
            "Tick messages still to process: end offset minus next offset to process",
            labels=["partition"])
        for partition, n in sorted(c.behind.items()):
            behind.add_metric([str(partition)], float(n))
        yield behind
        est = GaugeMetricFamily("gswarm_sketch_estimate",
                                "HyperLogLog estimates over this worker's partitions",
                                labels=["what"])
        for what, value in sorted(self.estimates().items()):
            est.add_metric([what], value)
        yield est


def setup(app: Any, counters: Counters, estimates: Callable[[], dict[str, float]]) -> None:
    """Faust's Prometheus sensor and page at /metrics, with Gswarm's collector."""
    setup_prometheus_sensors(app, "/metrics", REGISTRY,
                             name_prefix=app.conf.name.replace("-", "_"))
    REGISTRY.register(GswarmCollector(counters, estimates))
