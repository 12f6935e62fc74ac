"""The Faust app, configured from :class:`gswarm.config.Settings`.

Only this module creates the app; tables, agents and views register with it on import
(:mod:`gswarm.app` imports them all so ``faust -A gswarm.app worker`` finds everything).
"""

from __future__ import annotations

import faust

from gswarm.config import Settings
from gswarm.kafka.security import faust_credentials
from gswarm.stream.delivery import Faults, broker_urls, inject_faults
from gswarm.web.access import middlewares, peer_session, server_context
from gswarm.web.middleware import json_errors

settings = Settings.from_env()


#: how often a worker's consumer re-reads the cluster's metadata (see make_app)
METADATA_MAX_AGE_MS = 10_000


def make_app(s: Settings) -> faust.App:
    """A Faust app tuned for Gswarm: RocksDB tables, fast failure detection, loopback web."""
    return faust.App(
        s.app_id,
        # Faust's aiokafka driver with run delivery (gswarm/stream/delivery.py)
        broker=broker_urls(s.broker, s.fetch_wait_ms),
        # TLS and SASL from GSWARM_KAFKA_* (gswarm/kafka/security.py): every Faust client
        broker_credentials=faust_credentials(s),
        store="rocksdb://",
        datadir=str(s.data_dir),
        topic_partitions=s.partitions,
        topic_replication_factor=s.replication,
        topic_allow_declare=True,
        table_standby_replicas=0 if s.lean else 1,
        processing_guarantee="at_least_once",
        producer_acks=-1,  # acks=all: a changelog write is acknowledged once replicated
        consumer_auto_offset_reset="earliest",
        # aiokafka refreshes its metadata when a fetch or a send meets a moved leader, but
        # not when a partition's position reset (ListOffsets) does: it retries the old
        # leader until the periodic refresh, 5 min by default. Fresh workers of the chaos
        # soak that read their metadata just before a restarted broker took its leaders
        # back retried so for exactly 5 min (Faust's leader topic, which has no committed
        # offset), and their recovery seek never finished meanwhile. A 10 s refresh bounds
        # that wait well inside the seek's limit (RunConsumer.seek_to_committed).
        consumer_metadata_max_age_ms=METADATA_MAX_AGE_MS,
        # a killed worker is noticed within the session timeout (the local broker allows
        # >= 1 s); a supervised one is evicted at once (gswarm.kafka.groups.evict)
        broker_session_timeout=s.session_timeout_s,
        broker_heartbeat_interval=s.heartbeat_s,
        broker_commit_interval=s.commit_interval_s,
        producer_linger_ms=2,
        producer_max_batch_size=512 * 1024,
        # A fetch is bounded by bytes per partition, and each poll takes all that was
        # fetched (Faust's default, no record cap): every partition's data is consumed at
        # once, so aiokafka asks for the next fetch at once (with a cap, partitions left
        # with data hold the next fetch back by up to 100 ms: 36k instead of 190k msgs/s).
        consumer_max_fetch_size=s.fetch_partition_bytes,
        broker_max_poll_records=None,
        # the root logger back at the configured level once started (worker.py)
        Worker="gswarm.stream.worker:Worker",
        # a resume of the flow empties the changelog queue only after a rebalance began:
        # Faust's dropped records a standby was reading (gswarm/stream/changelogs.py)
        TableManager="gswarm.stream.changelogs:TableManager",
        web_enabled=True,
        web_host=s.web_host,
        web_bind=s.web_host,
        web_port=s.web_port,
        web_transport=f"tcp://{s.web_host}",
        web_ssl_context=server_context(s),
        canonical_url=s.web_url,
        # the bearer token on every route but the public ones (gswarm/web/access.py); the
        # workers' own client sends it, and trusts GSWARM_WEB_CA_FILE
        web_application_options={"middlewares": [json_errors, *middlewares(s)]},
        HttpClient=peer_session(s),
    )


app = make_app(settings)
inject_faults(app, Faults(settings.fault_produce_delay_ms / 1000.0,
                          settings.fault_kill_after_commit))
