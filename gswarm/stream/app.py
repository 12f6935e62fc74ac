"""The Faust app, configured from :class:`gswarm.config.Settings`.

Only this module creates the app; tables, agents and views register with it on import
(:mod:`gswarm.app` imports them all so ``faust -A gswarm.app worker`` finds everything).
"""

from __future__ import annotations

import faust

from gswarm.config import Settings
from gswarm.web.middleware import json_errors

settings = Settings.from_env()


def make_app(s: Settings) -> faust.App:
    """A Faust app tuned for Gswarm: RocksDB tables, fast failure detection, loopback web."""
    return faust.App(
        s.app_id,
        broker=[f"kafka://{hostport.strip()}" for hostport in s.broker.split(",")],
        store="rocksdb://",
        datadir=str(s.data_dir),
        topic_partitions=s.partitions,
        topic_replication_factor=s.replication,
        topic_allow_declare=True,
        table_standby_replicas=0 if s.lean else 1,
        processing_guarantee="at_least_once",
        consumer_auto_offset_reset="earliest",
        # a killed worker is noticed within a few seconds (the broker allows >= 1 s)
        broker_session_timeout=3.0,
        broker_heartbeat_interval=0.5,
        broker_commit_interval=s.commit_interval_s,
        producer_linger_ms=2,
        producer_max_batch_size=512 * 1024,
        consumer_max_fetch_size=4 * 1024 * 1024,
        stream_buffer_maxsize=max(4096, 2 * s.batch_max),
        web_enabled=True,
        web_host=s.web_host,
        web_bind=s.web_host,
        web_port=s.web_port,
        web_transport=f"tcp://{s.web_host}",
        web_application_options={"middlewares": [json_errors]},
    )


app = make_app(settings)
