"""The admin home page, in a real browser (Debian's chromium via Playwright), and its JSON."""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession

from router.buildinfo import build_info
from router.testing import Backend, run_router
from tests.integration.test_provenance_page import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS
from tests.integration.test_workers import new_connection_requests, workers_config
from tests.support.processes import free_port, get, started
from tests.support.signatures import new_key_pem
from tests.support.tls import TestCA

VERSION = {"repository": "https://github.com/example/shop", "commit": "9b1c2d3e" * 5}


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    if shutil.which(CHROMIUM) is None:
        pytest.skip("chromium is installed by tests/run.sh")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        # No JavaScript: the page must work without it.
        context = await browser.new_context(java_script_enabled=False)
        try:
            yield context
        finally:
            await browser.close()


def config(backend: Backend, key_file: Path) -> dict[str, Any]:
    return {
        "plugins": [
            {"name": "tracing", "config": {"exporter": "none"}},
            {"name": "provenance", "config": {"key_file": str(key_file)}},
            {"name": "ip_filter"},
        ],
        "routes": [
            {
                "name": "shop",
                "hosts": ["shop.test", "www.shop.test"],
                "path": "/cart",
                "upstreams": [{"url": backend.url, "version": VERSION}],
                "plugins": {"ip_filter": {"allow": ["127.0.0.0/8"]}},
            },
            {
                "name": "down",
                "upstreams": [{"url": f"http://127.0.0.1:{free_port()}"}],
                "retries": 0,
                "health": {"max_failures": 2, "ejection": "5m"},
            },
        ],
    }


async def test_home_page_shows_routes_plugins_health_versions_and_rates(
    tmp_path: Path, backend: Backend, browser: Any, client: ClientSession
) -> None:
    key_file = tmp_path / "key.pem"
    key_file.write_bytes(new_key_pem()[0])
    async with run_router(config(backend, key_file)) as router:
        for _ in range(4):
            await get(client, router.url + "/cart", headers={"Host": "shop.test"})
        for _ in range(3):
            await get(client, router.url + "/x")

        page = await browser.new_page()
        response = await page.goto(router.admin_url + "/")
        assert response is not None and response.status == 200
        assert "default-src 'none'" in response.headers["content-security-policy"]
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "admin-home.png"
        await page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 1000
        text = await page.inner_text("body")
        rows = {
            await row.locator("td").first.inner_text(): await row.inner_text()
            for row in await page.locator("tr:has(td)").all()
        }
        status, body, _ = await get(
            client, router.admin_url + "/", headers={"Accept": "application/json"}
        )
        _, routes_body, _ = await get(client, router.admin_url + "/routes")

    assert build_info().commit in text
    assert "Plugins on every request: tracing, provenance" in text
    assert "Problems (0)" in text
    shop = rows["shop"]
    assert "shop.test" in shop and "/cart" in shop
    assert "ip_filter" in shop and "tracing" in shop and "provenance" in shop
    assert "healthy" in shop and VERSION["commit"] in shop
    assert backend.url in shop and "4 requests" in shop
    down = rows["down"]
    assert "ejected" in down and "*any*" in down

    assert status == 200
    document = json.loads(body)
    by_name = {route["name"]: route for route in document["routes"]}
    assert by_name["shop"]["plugins"] == ["tracing", "provenance", "ip_filter"]
    assert by_name["shop"]["requests"] == 4
    assert by_name["shop"]["rate_per_second"] > 0
    assert by_name["down"]["errors_5xx"] == 3
    assert by_name["down"]["errors_per_second"] > 0
    assert by_name["down"]["endpoints"][0]["healthy"] is False
    assert by_name["shop"]["endpoints"][0]["version"] == VERSION
    # /routes names the plugins that run on each route (it listed none before).
    routes = {route["name"]: route for route in json.loads(routes_body)["routes"]}
    assert routes["shop"]["plugins"] == ["tracing", "provenance", "ip_filter"]
    assert routes["down"]["plugins"] == ["tracing", "provenance"]  # global only


async def test_supervisor_page_covers_every_worker(
    tmp_path: Path, backend: Backend, browser: Any, client: ClientSession
) -> None:
    path, public, admin = workers_config(tmp_path, backend)
    with started(["serve", "--config", str(path)], tmp_path) as router:
        await router.wait_ready(client, admin)
        await new_connection_requests(public, 30)
        status, body, _ = await get(client, admin + "/status")
        _, routes_body, _ = await get(client, admin + "/routes")
        page = await browser.new_page()
        await page.goto(admin + "/")
        await page.screenshot(path=str(ARTIFACTS / "admin-home-workers.png"), full_page=True)
        text = await page.inner_text("body")
    assert status == 200
    document = json.loads(body)
    assert [w["index"] for w in document["workers"]] == [0, 1]
    assert all(w["answered"] and w["pid"] for w in document["workers"])
    (app,) = document["routes"]
    assert app["requests"] == 30  # both workers' requests
    assert app["endpoints"][0]["healthy_workers"] == "healthy in 2 of 2 workers"
    assert [w["index"] for w in json.loads(routes_body)["workers"]] == [0, 1]
    assert "Workers" in text and "healthy in 2 of 2 workers" in text


def test_values_from_the_cluster_are_shown_as_text() -> None:
    from router.admin_page import render_html

    hostile = "<script>alert(1)</script>"
    document = {
        "router": {"version": "1", "commit": "c", "dirty": False, "global_plugins": []},
        "generation": 1,
        "rate_window_seconds": 60,
        "problems": [{"source": "kubernetes", "route": None, "message": hostile}],
        "routes": [
            {
                "name": "r",
                "hosts": ["a.test"],
                "path": "/",
                "path_type": "Prefix",
                "plugins": [],
                "rate_per_second": 0.0,
                "errors_per_second": 0.0,
                "endpoints": [
                    {
                        "url": "http://10.0.0.1",
                        "healthy": True,
                        "requests": 0,
                        "failures": 0,
                        "version": {"commit": hostile, hostile: "x"},
                    }
                ],
            }
        ],
    }
    page = render_html(document)
    assert "<script" not in page
    assert page.count("&lt;script&gt;alert(1)&lt;/script&gt;") == 3


async def test_home_page_lists_the_certificates_served(
    backend: Backend, client: ClientSession, tmp_path: Path
) -> None:
    ca = TestCA()
    cert, key = ca.write(tmp_path, "shop", "shop.example", "*.shop.example")
    config = {
        "listeners": [
            {"name": "http", "listen": "127.0.0.1:0"},
            {"name": "https", "listen": "127.0.0.1:0", "tls": {}},
        ],
        "tls": {"certificates": [{"cert": str(cert), "key": str(key)}]},
        "routes": [{"name": "app", "upstreams": [{"url": backend.url}]}],
    }
    async with run_router(config) as router:
        async with client.get(router.admin_url + "/") as response:
            page = await response.text()
        async with client.get(router.admin_url + "/status") as response:
            document = await response.json()
    assert "<h2>Certificates (1)</h2>" in page
    assert "*.shop.example" in page and "commons-router test CA" in page
    (served,) = document["certificates"]
    assert served["names"] == ["shop.example", "*.shop.example"]
    assert served["source"].endswith("shop.crt") or str(cert) in served["source"]
