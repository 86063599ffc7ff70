"""The provenance page, rendered by a real browser (Debian's chromium via Playwright)."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession

from router.testing import Backend, run_router
from tests.support.signatures import new_key_pem

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
PAGE = "/.well-known/commons-router/provenance"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    # *.test names resolve to the router on 127.0.0.1, so the page sees a real Host.
    "--host-resolver-rules=MAP *.test 127.0.0.1",
]

pytestmark = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None, reason="chromium is installed by tests/run.sh"
)


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


def config(backend: Backend, key_file: Path, version: dict[str, str]) -> dict[str, Any]:
    return {
        "plugins": [
            {"name": "provenance", "config": {"key_file": str(key_file)}},
            {"name": "tracing", "config": {"exporter": "none"}},
        ],
        "routes": [
            {
                "name": "shop",
                "hosts": ["shop.test"],
                "upstreams": [{"url": backend.url, "version": version}],
            },
            # Another URL: endpoint state (and version) is kept per URL.
            {"name": "fallback", "upstreams": [{"url": backend.url + "/other"}]},
        ],
    }


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "key.pem"
    path.write_bytes(new_key_pem()[0])
    return path


async def test_page_shows_the_code_behind_the_route(
    backend: Backend, key_file: Path, browser: Any
) -> None:
    version = {
        "repository": "https://github.com/example/shop",
        "commit": "9b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c",
        "image": "ghcr.io/example/shop:2.4.1",
        "image_digest": "sha256:" + "cd" * 32,
    }
    async with run_router(config(backend, key_file, version)) as router:
        page = await browser.new_page()
        # The page is answered on every host; this one resolves to the "shop" route.
        response = await page.goto(f"http://shop.test:{router.port}{PAGE}")
        assert response is not None and response.status == 200
        text = await page.inner_text("body")
        assert "Which code answers shop.test?" in text
        assert "Route shop." in text
        assert version["commit"] in text
        assert version["image_digest"] in text
        commit_link = page.get_by_role("link", name=version["commit"])
        assert await commit_link.get_attribute("href") == (
            "https://github.com/example/shop/commit/" + version["commit"]
        )
        assert await page.get_by_role("link", name=version["repository"]).count() == 1
        assert f"commons-router inspect http://shop.test:{router.port}/" in text
        trace_id = response.headers["traceresponse"].split("-")[1]
        assert f"trace id {trace_id}" in text  # the page's own trace, to quote
        keys = page.get_by_role("link", name="/.well-known/commons-router/provenance-keys")
        assert await keys.count() == 1
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "provenance-page.png"), full_page=True)
        assert (ARTIFACTS / "provenance-page.png").stat().st_size > 1000


async def test_hostile_version_values_are_shown_as_text(
    backend: Backend, key_file: Path, browser: Any, client: ClientSession
) -> None:
    version = {
        "repository": "javascript:alert(1)",
        "commit": "<img src=x onerror=alert(2)>",
    }
    async with run_router(config(backend, key_file, version)) as router:
        page = await browser.new_page()
        dialogs: list[str] = []
        page.on("dialog", lambda dialog: dialogs.append(dialog.message))
        await page.goto(f"http://shop.test:{router.port}{PAGE}")
        text = await page.inner_text("body")
        assert "<img src=x onerror=alert(2)>" in text
        assert await page.locator("img").count() == 0
        assert await page.locator("a[href^='javascript']").count() == 0
        assert dialogs == []
        async with client.get(router.url + PAGE, headers={"Accept": "application/json"}) as r:
            document = await r.json()
            assert document["route"] == "fallback"
            assert document["signature"]["keys"].endswith("provenance-keys")
            assert r.headers["Content-Security-Policy"].startswith("default-src 'none'")
