"""The JSON API on real workers: answers, routing across workers, bad input, fuzzing."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gswarm.config import Settings
from gswarm.feeds.synthetic import synthetic_ticks
from gswarm.ports import free_port
from gswarm.runner import WorkerProcess
from tests.stream.conftest import OUTPUT, produce_ticks, wait_consumed
from tests.stream.truth import ground_truth
from tests.web.conftest import two_workers

pytestmark = pytest.mark.timeout(600)
TICKS = list(synthetic_ticks(markets=60, count=4000, seed=17))


def status_of(worker: WorkerProcess, path: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(worker.url + path, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        body = exc.read()
        return exc.code, json.loads(body)  # must be JSON


@pytest.fixture
def one(app_settings: Settings, workers: Callable[..., WorkerProcess]) -> WorkerProcess:
    w = workers(app_settings)
    produce_ticks(app_settings, TICKS)
    wait_consumed(w, len(TICKS))
    return w


def test_history_pages_add_up_to_the_whole_series(one: WorkerProcess) -> None:
    market = max({t["market"] for t in TICKS}, key=[t["market"] for t in TICKS].count)
    whole = one.get(f"/api/markets/{market}/history?limit=10000")["points"]
    pages, query = [], "limit=37"
    while True:
        doc = one.get(f"/api/markets/{market}/history?{query}")
        pages += doc["points"]
        if doc["next"] is None:
            break
        query = f"limit=37&from={doc['next']['from']}&after_seq={doc['next']['after_seq']}"
    assert pages == whole and len(whole) > 37


def test_overview_endpoints(one: WorkerProcess) -> None:
    truth = ground_truth(TICKS)
    health = one.get("/api/health")
    assert health["status"] == "ok" and len(health["partitions"]) == 4
    stats = one.get("/api/stats")
    assert stats["ticks"] == len(TICKS) and stats["dead_letters_total"] == 0
    assert abs(stats["unique_markets"] - len(truth.records)) < 2
    cluster = one.get("/api/cluster")
    assert cluster["leader"] and cluster["active"] == [0, 1, 2, 3] and not cluster["recovering"]
    storage = one.get("/api/storage")["partitions"]
    assert sum(p["markets"] for p in storage.values()) == len(truth.records)
    hot = one.get("/api/hot?k=3")["markets"]
    assert hot[0]["ticks"] >= max(r.n for r in truth.records.values())
    doc = one.get("/api/openapi.json")
    assert doc["openapi"].startswith("3.") and "/api/markets/{market}/history" in doc["paths"]


def metric(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    raise KeyError(name)


def test_metrics_parse_and_move_with_ingest(
    app_settings: Settings, workers: Callable[..., WorkerProcess]
) -> None:
    w = workers(app_settings)

    def scrape() -> str:
        with urllib.request.urlopen(w.url + "/metrics", timeout=10) as resp:
            assert resp.headers["Content-Type"].startswith("text/plain")
            return str(resp.read().decode())

    before = scrape()
    assert metric(before, "gswarm_messages_total") == 0
    produce_ticks(app_settings, TICKS[:500])
    wait_consumed(w, 500)
    after = scrape()
    assert metric(after, "gswarm_messages_total") == 500
    assert metric(after, "gswarm_ticks_total", source="synthetic") == 500
    assert metric(after, "gswarm_batch_messages_count") >= 1
    assert metric(after, "gswarm_sketch_estimate", what="unique_markets") > 10
    prefix = app_settings.app_id.replace("-", "_")
    # Faust's sensor counts deliveries: one per run of a partition's messages (delivery.py)
    assert metric(after, f"{prefix}_messages_received_total") >= 1


BAD = [
    ("/api/markets/unknown-market", 404),
    ("/api/markets/m-00000/history?from=abc", 400),
    ("/api/markets/m-00000/history?from=10&to=5", 400),
    ("/api/markets/m-00000/history?limit=0", 400),
    ("/api/markets/m-00000/history?limit=100000", 400),
    ("/api/markets/m-00000/history?attr=nope", 400),
    ("/api/markets/m-00000/history?from=-5", 400),
    ("/api/markets/m-00000/asof", 400),
    ("/api/markets/m-00000/asof?t=1e99", 400),
    ("/api/markets/m-00000/asof?t=99999999999999999999999", 400),
    ("/api/markets/m-00000/since?ts=x", 400),
    ("/api/markets/%01bad/history", 400),
    ("/api/markets/" + "x" * 300, 400),
    ("/api/markets?limit=-1", 400),
    ("/api/markets?prefix=%00", 400),
    ("/api/similar/m-00000?k=0", 400),
    ("/api/similar/m-00000?k=5000", 400),
    ("/api/similar/m-00000?min=2", 400),
    ("/api/similar/m-00000?min=nan", 400),
    ("/api/similar/nope-market", 404),
    ("/api/similar?vector=1,2,3", 400),
    ("/api/similar?vector=a,b", 400),
    ("/api/similar", 400),
    ("/api/screen?component=rsi14&value=x", 400),
    ("/api/screen?component=nope&value=1", 400),
    ("/api/screen?component=rsi14&op=eq&value=1", 400),
    ("/api/hot?k=0", 400),
    ("/api/hot?window=0", 400),
    ("/api/hot?window=999999", 400),
    ("/api/hot?window=inf", 400),
    ("/api/hot?window=-1.5e308&k=297", 400),  # found by the fuzzer: was a 500
    ("/api/nothing-here", 404),
    ("/static/../../etc/passwd", 404),
]


def test_bad_requests_get_4xx_json(one: WorkerProcess) -> None:
    for path, expected in BAD:
        code, body = status_of(one, path)
        assert code == expected, (path, code, body)
        assert isinstance(body.get("error"), str) and body["error"], path
        assert "Traceback" not in body["error"]


@pytest.mark.skipif(shutil.which("schemathesis", path=str(sys.prefix) + "/bin") is None,
                    reason="schemathesis is a dev dependency (pip install -e '.[dev]')")
def test_fuzzing_the_openapi_document_finds_no_5xx(one: WorkerProcess) -> None:
    exe = str(sys.prefix) + "/bin/schemathesis"
    proc = subprocess.run(
        [exe, "run", one.url + "/api/openapi.json", "--checks", "not_a_server_error",
         "--max-examples", "25", "--workers", "1", "--seed", "1"],
        capture_output=True, text=True, timeout=400,
    )
    OUTPUT.mkdir(exist_ok=True)
    (OUTPUT / "schemathesis.txt").write_text(proc.stdout + proc.stderr)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert one.alive()


def test_any_worker_answers_for_any_market(
    settings_factory: Callable[..., Settings], workers: Callable[..., WorkerProcess],
) -> None:
    s = settings_factory(web_port=free_port(), partitions=4, lean=False)
    w1, w2 = two_workers(s, workers, TICKS)
    time.sleep(1)
    truth = ground_truth(TICKS)
    mine = set(w1.get("/api/health")["partitions"])
    assert mine and mine != {0, 1, 2, 3}
    for market, rec in truth.records.items():
        q = urllib.parse.quote(market, safe="")
        a, b = w1.get(f"/api/markets/{q}"), w2.get(f"/api/markets/{q}")
        assert a == b and a["ticks"] == rec.n and a["prob"] == rec.latest["prob"]
        assert w1.get(f"/api/markets/{q}/history?limit=10000") == w2.get(
            f"/api/markets/{q}/history?limit=10000")
    # cluster-wide answers are the same from both workers
    for path in ("/api/markets?prefix=m-&limit=1000", "/api/similar/m-00003?k=5",
                 "/api/screen?component=rsi14&op=gt&value=0.5"):
        assert w1.get(path) == w2.get(path), path
    assert len(w1.get("/api/markets?prefix=m-&limit=1000")["markets"]) == len(truth.records)
    assert w1.get("/api/stats")["unique_markets"] == w2.get("/api/stats")["unique_markets"]
