"""The local multi-node cluster's layout: one quorum, one cluster id, replication 3 with
min.insync.replicas 2, ports kept so it restarts as itself.

Starting it, killing a node (kill -9) mid-stream and starting it again is exercised on the
real cluster by the chaos soak (tests/bench/test_chaos.py), which needs it anyway; this
module checks the layout without starting three JVMs a second time.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gswarm.errors import BrokerError
from gswarm.kafka.broker import LocalCluster, local_clusters
from tests.conftest import broker_settings


def props(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def test_three_nodes_one_quorum_replicated_topics(tmp_path: Path) -> None:
    settings = broker_settings(tmp_path / "kafka")
    cluster = LocalCluster(settings, size=3)
    for node in cluster.nodes:
        node.write_properties()
    seen = [props(node.properties) for node in cluster.nodes]
    assert [p["node.id"] for p in seen] == ["1", "2", "3"]
    assert len({p["controller.quorum.voters"] for p in seen}) == 1
    assert seen[0]["controller.quorum.voters"].count("@127.0.0.1:") == 3
    for p in seen:
        assert p["default.replication.factor"] == "3" and p["min.insync.replicas"] == "2"
        assert p["offsets.topic.replication.factor"] == "3"
    assert len({n.node.cluster_id for n in cluster.nodes}) == 1
    ports = [n.settings.kafka_port for n in cluster.nodes]
    assert ports[0] == settings.kafka_port and len(set(ports)) == 3
    assert cluster.bootstrap == ",".join(f"127.0.0.1:{p}" for p in ports)
    client = cluster.client_settings()
    assert client.broker == cluster.bootstrap and client.replication == 3
    # the same cluster again (ports, id), and `kafka down` finds it
    again = LocalCluster(settings, size=3)
    assert again.bootstrap == cluster.bootstrap
    assert again.nodes[2].node == cluster.nodes[2].node
    assert [c.size for c in local_clusters(settings)] == [3]
    assert cluster.pids() == [None, None, None] and cluster.stop() is False


def test_a_cluster_needs_a_broker() -> None:
    with pytest.raises(BrokerError, match="at least one broker"):
        LocalCluster(broker_settings(Path("/nonexistent")), size=0)
