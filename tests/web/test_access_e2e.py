"""API access on real workers: a bearer token on every route but the public ones, sent by
workers to each other (routing, gathering) over HTTPS, and by `gswarm query`."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from gswarm.config import Settings
from gswarm.feeds.synthetic import synthetic_ticks
from gswarm.kafka.broker import LocalBroker
from gswarm.ports import free_port
from gswarm.runner import WorkerProcess
from gswarm.web import access, openapi
from tests.security.pki import Authority
from tests.stream.truth import ground_truth
from tests.test_cli_errors import assert_fails, gswarm
from tests.web.conftest import two_workers

pytestmark = pytest.mark.timeout(300)
TOKEN = "a-long-random-token-for-the-tests"
TICKS = list(synthetic_ticks(markets=40, count=1500, seed=23))
MARKET = TICKS[-1]["market"]
# what each route needs to answer 200 (the other parameters have defaults)
PARAMS = {
    "/api/markets/{market}/asof": {"t": str(TICKS[-1]["ts"])},
    "/api/markets/{market}/since": {"ts": "0"},
    "/api/screen": {"component": "rsi14", "op": "gt", "value": "0"},
}
# routes the OpenAPI document does not list (internal, streaming, metrics, the document)
UNLISTED = ["/api/openapi.json", "/api/sketches/local", f"/api/vector/{MARKET}",
            "/api/events?count=1", "/metrics"]
PUBLIC = ["/api/health", "/", "/static/dashboard.js"]


def status_of(worker: WorkerProcess, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    request = urllib.request.Request(worker.url + path, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=15,
                                    context=access.client_context(worker.settings)) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def routes(document: dict[str, Any], vector: list[float]) -> list[str]:
    """Every path of the OpenAPI ``document``, filled in so that it answers 200, and the
    unlisted ones."""
    out = []
    for template in document["paths"]:
        if access.is_public(template):
            continue
        params = dict(PARAMS.get(template, {}))
        if template == "/api/similar":
            params["vector"] = ",".join(map(repr, vector))
        path = template.replace("{market}", urllib.parse.quote(MARKET, safe=""))
        out.append(path + ("?" + urllib.parse.urlencode(params) if params else ""))
    return out + UNLISTED


@pytest.fixture(scope="module")
def https_pair(kafka: LocalBroker, module_workers: Callable[..., WorkerProcess],
               tmp_path_factory: pytest.TempPathFactory) -> tuple[WorkerProcess, WorkerProcess]:
    """Two workers serving HTTPS with a token, the ticks ingested across both (shared by
    the module's tests: they only read)."""
    home = tmp_path_factory.mktemp("https-pair")
    pki = Authority(home / "pki")
    web = pki.issue("web")
    s = kafka.settings.override(
        app_id=f"access{os.getpid()}", data_dir=home / "data", web_port=free_port(),
        partitions=4, lean=False, log_level="info", api_token=TOKEN,
        web_cert_file=str(web.cert), web_key_file=str(web.key), web_ca_file=str(pki.ca_file))
    return two_workers(s, module_workers, TICKS)


def test_every_route_needs_the_token_but_the_public_ones(
    https_pair: tuple[WorkerProcess, WorkerProcess],
) -> None:
    w1, w2 = https_pair
    assert w1.url.startswith("https://")
    vector = w1.get(f"/api/vector/{MARKET}")["vector"] or w2.get(f"/api/vector/{MARKET}")[
        "vector"]
    document = w1.get("/api/openapi.json")
    assert document["security"] == [{"bearer": []}]
    assert document["paths"] == openapi.document(w1.settings)["paths"]
    paths = routes(document, vector)
    assert len(paths) >= 17  # every route of the OpenAPI document but /api/health
    refused = [{}, {"Authorization": "Bearer wrong-token"},
               {"Authorization": f"Basic {TOKEN}"}, {"Authorization": f"Bearer {TOKEN}x"}]
    for worker in (w1, w2):
        for path in paths:
            for headers in refused:
                code, body = status_of(worker, path, headers)
                assert code == 401, (path, headers, code, body[:200])
                assert json.loads(body)["error"], path
            code, body = status_of(worker, path, access.bearer(TOKEN))
            assert code == 200, (worker.url, path, body[:300])
        for path in PUBLIC:
            assert status_of(worker, path, {})[0] == 200, path


def test_workers_route_and_gather_with_the_token(
    https_pair: tuple[WorkerProcess, WorkerProcess],
) -> None:
    w1, w2 = https_pair
    truth = ground_truth(TICKS)
    mine = set(w1.get("/api/health")["partitions"])
    assert mine and mine != {0, 1, 2, 3}
    for market, rec in truth.records.items():  # half of them routed to the other worker
        q = urllib.parse.quote(market, safe="")
        a, b = w1.get(f"/api/markets/{q}"), w2.get(f"/api/markets/{q}")
        assert a == b and a["ticks"] == rec.n
    for path in ("/api/markets?prefix=m-&limit=1000", f"/api/similar/{MARKET}?k=5",
                 "/api/screen?component=rsi14&op=gt&value=0.5", "/api/stats"):
        assert w1.get(path).get("markets") == w2.get(path).get("markets"), path
    assert len(w1.get("/api/markets?prefix=m-&limit=1000")["markets"]) == len(truth.records)
    assert w1.get("/api/stats")["ticks"] + w2.get("/api/stats")["ticks"] == len(TICKS)


def _env(settings: Settings, **more: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("GSWARM_")}
    return {**base, **settings.to_env(), **more}


def test_gswarm_query_sends_the_token(
    https_pair: tuple[WorkerProcess, WorkerProcess],
) -> None:
    w1, _ = https_pair
    done = gswarm(["query", "latest", MARKET], _env(w1.settings))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["market"] == MARKET
    done = gswarm(["query", "stats"], _env(w1.settings, GSWARM_API_TOKEN="wrong-token"))
    assert_fails(done, 1, ["answered 401", "wrong API token"])
    done = gswarm(["query", "stats"], _env(w1.settings, GSWARM_API_TOKEN=""))
    assert_fails(done, 1, ["answered 401", "bearer token"])


def test_a_token_on_a_loopback_bind_is_required_too(
    app_settings: Settings, workers: Callable[..., WorkerProcess],
) -> None:
    worker = workers(app_settings.override(api_token=TOKEN))
    assert worker.url.startswith("http://127.0.0.1")
    assert status_of(worker, "/api/stats", {})[0] == 401
    assert status_of(worker, "/api/stats", access.bearer(TOKEN))[0] == 200


