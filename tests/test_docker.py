"""docker/: no Docker engine runs here, so the compose file's structure is checked."""

from __future__ import annotations

from pathlib import Path

import yaml

DOCKER = Path(__file__).resolve().parents[1] / "docker"


def test_compose_has_three_kraft_brokers_and_two_workers() -> None:
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    brokers = {n: s for n, s in services.items() if s.get("image", "").startswith("apache/kafka")}
    workers = {n: s for n, s in services.items() if n.startswith("worker")}
    assert len(brokers) == 3 and len(workers) == 2
    node_ids = set()
    for svc in brokers.values():
        env = svc["environment"]
        assert svc["image"].split(":")[1].startswith("3.9")
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
        assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].count("@") == 3
        assert "CONTROLLER://" in env["KAFKA_LISTENERS"]
        assert env["KAFKA_ADVERTISED_LISTENERS"].startswith("PLAINTEXT://kafka")
        for key in ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
                    "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
                    "KAFKA_DEFAULT_REPLICATION_FACTOR"):
            assert int(env[key]) >= 2
        node_ids.add(env["KAFKA_NODE_ID"])
    assert len(node_ids) == 3
    for svc in workers.values():
        env = svc["environment"]
        assert int(env["GSWARM_REPLICATION"]) >= 2  # changelog topics replicated
        assert env["GSWARM_BROKER"].count(":9092") == 3
        assert svc["build"]["dockerfile"] == "docker/Dockerfile"
        # bound beyond loopback: the API token must come from the environment
        assert env["GSWARM_WEB_HOST"] == "0.0.0.0"
        assert env["GSWARM_API_TOKEN"].startswith("${GSWARM_API_TOKEN:?")


def test_dockerfile_runs_the_faust_worker() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    assert '"faust", "-A", "gswarm.app", "worker"' in text


def test_live_feeds_are_opt_in_services_that_resume_from_their_cursor() -> None:
    services = yaml.safe_load((DOCKER / "compose.yaml").read_text())["services"]
    for name, kind in (("manifold-feed", "manifold"), ("polymarket-feed", "polymarket")):
        svc = services[name]
        assert svc["command"] == ["gswarm", "feed", kind, "--all"]
        assert svc["profiles"] == ["live"]  # `up` alone does not reach the internet
        assert svc["restart"] == "unless-stopped" and svc["depends_on"] == ["topics"]
