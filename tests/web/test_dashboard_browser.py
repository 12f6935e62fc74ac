"""The dashboard in headless Chromium (driven over the DevTools protocol) on a real worker."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gswarm.config import Settings
from gswarm.feeds.synthetic import synthetic_ticks
from gswarm.ports import free_port
from gswarm.runner import WorkerProcess
from tests.stream.conftest import OUTPUT, produce_ticks, wait_consumed

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(CHROMIUM is None,
                       reason="chromium is not installed (apt-get install chromium; .ci/run does)"),
]


@pytest.fixture
def devtools(tmp_path: Path) -> Iterator[str]:
    """A headless Chromium; yields its DevTools HTTP endpoint; stopped by its PID."""
    assert CHROMIUM is not None
    port = free_port()
    proc = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--window-size=1280,900", f"--user-data-dir={tmp_path / 'profile'}",
         f"--remote-debugging-port={port}", "--remote-debugging-address=127.0.0.1",
         "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/json/version", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


class Page:
    """Just enough of the DevTools protocol: navigate, evaluate, screenshot."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.next_id = 0

    async def call(self, method: str, **params: Any) -> Any:
        self.next_id += 1
        await self.ws.send_json({"id": self.next_id, "method": method, "params": params})
        while True:
            msg = json.loads((await self.ws.receive()).data)
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(msg["error"])
                return msg["result"]

    async def js(self, expression: str) -> Any:
        res = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return res["result"].get("value")

    async def until(self, expression: str, timeout: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = await self.js(expression)
            if value:
                return value
            await asyncio.sleep(0.2)
        raise AssertionError(f"timed out waiting for: {expression}")

    async def screenshot(self, name: str) -> Path:
        shot = await self.call("Page.captureScreenshot", format="png")
        OUTPUT.mkdir(exist_ok=True)
        path = OUTPUT / name
        path.write_bytes(base64.b64decode(shot["data"]))
        return path


async def browse(devtools: str, url: str, steps: Callable[[Page], Any], init: str = "") -> None:
    """Open ``url`` in a new tab (``init``: a script run before the page's own) and run
    ``steps`` on it."""
    async with aiohttp.ClientSession() as http:
        async with http.put(f"{devtools}/json/new?about:blank") as resp:
            target = await resp.json()
        async with http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            page = Page(ws)
            await page.call("Page.enable")
            if init:
                await page.call("Page.addScriptToEvaluateOnNewDocument", source=init)
            await page.call("Page.navigate", url=url)
            await steps(page)


def test_dashboard_renders_live_data_and_updates_without_reload(
    app_settings: Settings, workers: Callable[..., WorkerProcess], devtools: str
) -> None:
    ticks = list(synthetic_ticks(markets=30, count=2000, seed=4))
    worker = workers(app_settings)
    produce_ticks(app_settings, ticks)
    wait_consumed(worker, len(ticks))
    market = max({t["market"] for t in ticks}, key=[t["market"] for t in ticks].count)
    n = sum(t["market"] == market for t in ticks)

    async def steps(page: Page) -> None:
        rows = await page.until("document.querySelectorAll('#hot tbody tr').length")
        assert rows == 10
        assert await page.js("document.querySelector('#hot tbody tr a').textContent") == market
        shown = "document.getElementById('unique-markets').textContent"
        assert await page.until(f"{shown} !== '\\u2013' && {shown}") == "30"
        assert await page.until("document.querySelector('#rate-chart canvas') !== null")
        await page.screenshot("dashboard-overview.png")

        await page.js(f"location.hash = '#/market/{market}'")
        assert int(await page.until(
            "document.getElementById('prob-chart').dataset.points")) == n
        assert await page.js("document.querySelectorAll('#alpha tbody tr').length") == 20
        assert await page.js("document.querySelector('#prob-chart canvas') !== null")
        assert await page.js("document.querySelectorAll('#similar tbody tr').length") == 8
        await page.screenshot("dashboard-market.png")

        # a new tick appears without a reload (server-sent events trigger the refresh)
        late = dict(ticks[-1], market=market, ts=ticks[-1]["ts"] + 60_000, prob=0.5,
                    id="browser-test-tick")
        await asyncio.to_thread(produce_ticks, app_settings, [late])
        assert int(await page.until(
            f"Number(document.getElementById('prob-chart').dataset.points) === {n + 1} "
            f"&& document.getElementById('prob-chart').dataset.points")) == n + 1
        assert await page.js("performance.getEntriesByType('navigation').length") == 1
        await page.screenshot("dashboard-market-after-tick.png")

    asyncio.run(browse(devtools, worker.url + "/", steps))


def test_dashboard_asks_for_the_token_once_and_sends_it(
    app_settings: Settings, workers: Callable[..., WorkerProcess], devtools: str
) -> None:
    token = "dashboard-test-token"
    ticks = list(synthetic_ticks(markets=15, count=600, seed=8))
    worker = workers(app_settings.override(api_token=token))
    produce_ticks(app_settings, ticks)
    wait_consumed(worker, len(ticks))
    market = ticks[-1]["market"]
    # the user's answer to the page's prompt, counted
    answer = ("window.prompt = () => { window.asked = (window.asked || 0) + 1; "
              f"return {token!r}; }};")

    async def steps(page: Page) -> None:
        assert await page.until("document.querySelectorAll('#hot tbody tr').length") == 10
        assert await page.js("sessionStorage.getItem('gswarm-api-token')") == token
        await page.js(f"location.hash = '#/market/{market}'")
        assert int(await page.until("document.getElementById('prob-chart').dataset.points")
                   ) == sum(t["market"] == market for t in ticks)
        assert await page.js("window.asked") == 1  # asked once, kept for the session

    asyncio.run(browse(devtools, worker.url + "/", steps, init=answer))


WHALE_RULES = """
[[rule]]
id = "huge-bet"
kind = "whale"
volume = 1000000
"""


def test_a_new_signal_appears_in_the_panel_and_on_the_chart_without_reload(
    app_settings: Settings, workers: Callable[..., WorkerProcess], devtools: str,
    tmp_path: Path,
) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(WHALE_RULES)
    settings = app_settings.override(signals_rules=str(rules))
    ticks = list(synthetic_ticks(markets=5, count=300, seed=9))
    worker = workers(settings)
    produce_ticks(settings, ticks)
    wait_consumed(worker, len(ticks))
    market = ticks[-1]["market"]
    n = sum(t["market"] == market for t in ticks)
    whale = dict(ticks[-1], ts=ticks[-1]["ts"] + 1000, volume=2_000_000.0, id="whale-bet")

    async def steps(page: Page) -> None:
        await page.until("document.getElementById('status').textContent.startsWith('live')")
        await asyncio.sleep(1.5)  # a few snapshots: the panel is (and stays) empty
        assert await page.js("document.querySelectorAll('#signals tbody tr').length") == 0
        await asyncio.to_thread(produce_ticks, settings, [whale])
        row = "document.querySelector('#signals tbody tr')"
        got = await page.until(f"{row} && {row}.dataset.id")
        assert got.startswith(f"huge-bet:{market}:")
        assert await page.js(f"{row}.classList.contains('fresh')")
        assert await page.js(f"{row}.querySelector('a').getAttribute('href')") == (
            f"#/market/{market}")
        await page.screenshot("dashboard-signal.png")

        await page.js(f"{row}.querySelector('a').click()")
        assert int(await page.until(
            "document.getElementById('prob-chart').dataset.points")) == n + 1
        assert await page.js("document.getElementById('prob-chart').dataset.markers") == "1"
        assert await page.js(
            "document.querySelector('#market-signals tbody tr').dataset.id") == got
        assert await page.js("performance.getEntriesByType('navigation').length") == 1
        await page.screenshot("dashboard-market-signal.png")

    asyncio.run(browse(devtools, worker.url + "/", steps))
